"""``judgeopt audit RUN_DIR``: check what the services received against the run's policy."""

from __future__ import annotations

import argparse
from pathlib import Path

from judgeopt.core.log_defaults import LogDefaults

LOG_DEFAULTS = LogDefaults(level="info")
"""What this command logs unless --log-format and --log-level say otherwise."""
HELP = "check what the services received against the run's policy"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="the run directory (as given to optimize --run-dir)")


def run(args: argparse.Namespace) -> int:
    from judgeopt.orchestrator.engine.audit import audit_run

    report = audit_run(args.run_dir)
    for breach in report.breaches:
        print(f"BREACH {breach.stage} {breach.request_id}: {breach.problem}")
    verdict = "ok" if report.ok else f"{len(report.breaches)} breach(es)"
    unsent = f" ({report.never_sent} never reached a service: every attempt failed)" if report.never_sent else ""
    print(
        f"audit {verdict}: {report.checked_requests} received requests checked in {len(report.ledger_files)} "
        f"ledgers; {report.received_requests} of {report.routed_requests} routed requests received{unsent}"
    )
    return 0 if report.ok else 1
