"""Run one agent service exactly as ``judgeopt serve ROLE`` does, with bench-only switches for experiments.

    .venv/bin/python bench/_service_harness.py ROLE --config FILE [--ledger FILE] [--log-level info|warning]
        [--profile OUT]

``--profile OUT`` runs cProfile from the moment the service is ready until it stops (so start-up imports are left
out) and writes the stats to OUT. ``--log-level warning`` drops the per-RPC access-log lines (what-if: the access
log off); leaving out ``--ledger`` leaves out the ledger interceptor, as a service started without one does.
Nothing of the product is changed: this calls ``judgeopt.services.server.serve`` with the same arguments the CLI builds.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
from pathlib import Path

from judgeopt.core.log_setup import configure_logging
from judgeopt.orchestrator.config import load_config
from judgeopt.services.server import serve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("role")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--ledger", type=Path)
    parser.add_argument("--log-level", choices=["info", "warning"], default="info")
    parser.add_argument("--profile", type=Path)
    args = parser.parse_args()

    configure_logging(json=True, level=logging.INFO if args.log_level == "info" else logging.WARNING)
    file_config = load_config(args.config)
    service = file_config.service.model_copy(update={"port": 0, "ledger_path": args.ledger})
    model = file_config.models.for_role(args.role)
    profiler = cProfile.Profile()

    def ready(port: int) -> None:
        print(f"listening on {service.host}:{port}", flush=True)
        if args.profile:
            profiler.enable()

    asyncio.run(serve(args.role, model, service, on_ready=ready))
    if args.profile:
        profiler.disable()
        profiler.dump_stats(args.profile)


if __name__ == "__main__":
    main()
