"""``judgeopt audit RUN_DIR``: did any agent receive what the run's policy hides from it?

The evidence is the services' own ledgers (``services/<role>.ledger.jsonl``: what each request carried, written
by the receiving service), not the router's log alone: every request a service received must match a routed call
of this run, carry only the criteria that call may see, and only the fields the policy grants its stage. The
router's own log is checked against the policy too.

The critiques and gradients a call carried must be about criteria it sees (a per-criterion call is never handed
a joint text). The ledgers must account for the run's whole traffic: every routed call must have been received by
a service, unless every attempt of it failed (the calls table says so: it never reached one). An audit that
checked nothing (ledgers emptied, or of another run) is refused, not passed.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from judgeopt.core.contract import WORK_METHODS
from judgeopt.core.errors import ConfigError
from judgeopt.orchestrator.engine.policy import Policy, RoutingState, Stage
from judgeopt.orchestrator.engine.router import AuditEntry
from judgeopt.orchestrator.engine.store import RunStore

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Breach:
    request_id: str
    stage: str
    problem: str


@dataclass(frozen=True)
class AuditReport:
    checked_requests: int
    """Ledger lines of the run checked: a request received twice (a retry keeps its id) counts twice."""
    ledger_files: tuple[str, ...]
    breaches: tuple[Breach, ...]
    routed_requests: int
    """Calls the router logged."""
    received_requests: int
    """Routed calls some ledger holds."""
    never_sent: int
    """Routed calls no service received because every attempt failed before reaching one."""

    @property
    def ok(self) -> bool:
        return not self.breaches


def allowed_fields(policy: Policy, stage: Stage, focus: Sequence[str], track: Sequence[str], step: int = 0) -> set[str]:
    """``criterion:field`` pairs a call of ``stage`` about ``focus`` may carry (``*`` for shared fields)."""
    return policy.view(stage, focus, RoutingState(step, tuple(track))).allowed()


def _check(
    policy: Policy, entry: AuditEntry, track: Sequence[str], criteria: Iterable[str], fields: Iterable[str], who: str
) -> list[Breach]:
    """What one call carried against what :meth:`Policy.view` allows it: the same view the router built it from."""
    view = policy.view(entry.stage, entry.criteria, RoutingState(entry.step, tuple(track)))
    breaches = []
    hidden_criteria = sorted(set(criteria) - set(view.visible))
    if hidden_criteria:
        breaches.append(Breach(entry.request_id, entry.stage, f"{who} criteria the policy hides: {hidden_criteria}"))
    hidden_fields = sorted(set(fields) - view.allowed())
    if hidden_fields:
        breaches.append(Breach(entry.request_id, entry.stage, f"{who} fields the policy hides: {hidden_fields}"))
    return breaches


def _carried(entry: AuditEntry, about: dict[str, tuple[str, ...]]) -> list[Breach]:
    """A call may carry a critique or gradient only if it is about criteria the call sees: a per-criterion call
    (a fallback's, say) must never be handed a joint text. Artifacts of a step not committed are not known."""
    wider = sorted(a for a in entry.artifacts if a in about and not set(about[a]) <= set(entry.visible))
    if not wider:
        return []
    return [Breach(entry.request_id, entry.stage, f"router sent artifacts about criteria the call hides: {wider}")]


def _ledger_entries(services_dir: Path) -> tuple[list[str], list[dict[str, object]]]:
    """Every ledger line; a torn last line (a service killed mid-write) is skipped, any other bad line refused."""
    files = sorted(services_dir.glob("*.ledger.jsonl"))
    entries = []
    for path in files:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                entries.append(json.loads(line))
            except ValueError:
                if number == len(lines):
                    log.warning("audit.torn_ledger_line", file=str(path), line=number)
                    continue
                raise ConfigError(f"{path}: line {number} is not a ledger entry") from None
    return [str(p) for p in files], entries


def audit_run(run_dir: Path) -> AuditReport:
    store = RunStore(run_dir)
    try:
        if not store.holds_run():
            raise ConfigError(f"{run_dir} holds no run")
        manifest = store.manifest()
        run_id, policy = manifest.run_id, manifest.policy
        # Judging outside the run's tracks (the interference experiment and measurement) covers every criterion.
        tracks = defaultdict(lambda: manifest.criterion_names, {t: manifest.track_criteria(t) for t in manifest.tracks})
        routed = {e.request_id: e for e in store.audit_entries()}
        about = store.artifact_criteria()
        outcomes: dict[str, set[str]] = {}
        for request_id, *_, outcome in store.calls():
            outcomes.setdefault(request_id, set()).add(outcome)
    finally:
        store.close()
    # A run's own services, or those an experiment's cells share (EXPERIMENT/cells/<cell> → EXPERIMENT/services).
    candidates = [run_dir / "services", run_dir.parent.parent / "services"]
    services_dir = next((d for d in candidates if any(d.glob("*.ledger.jsonl"))), candidates[0])
    files, ledger = _ledger_entries(services_dir)
    if not files:
        raise ConfigError(f"{services_dir} holds no service ledgers (*.ledger.jsonl); nothing to audit")
    breaches: list[Breach] = []
    for entry in routed.values():
        breaches += _check(policy, entry, tracks[entry.track], entry.visible, entry.fields, "router sent")
        breaches += _carried(entry, about)
    checked = 0
    received_ids: set[str] = set()
    for received in ledger:
        if received.get("run_id") != run_id or received.get("rpc") not in WORK_METHODS:
            continue  # another run's request, or the evaluator's diagnostics (outside the policy's stages)
        checked += 1
        request_id = str(received["request_id"])
        received_ids.add(request_id)
        stage = WORK_METHODS[str(received["rpc"])]
        logged = routed.get(request_id)
        if logged is None:
            breaches.append(Breach(request_id, stage, "a service received a request the router never routed"))
            continue
        entry = logged
        if entry.stage != stage:
            breaches.append(Breach(request_id, stage, f"routed as {entry.stage} but received by {stage}"))
            continue
        crit = received["criteria"]
        fields = received["fields"]
        assert isinstance(crit, list) and isinstance(fields, list)
        breaches += _check(policy, entry, tracks[entry.track], crit, fields, "service received")
    if checked == 0:
        raise ConfigError(
            f"{services_dir}: the ledgers hold no request of run {run_id} ({len(routed)} routed); nothing was checked"
        )
    never_sent = 0
    for request_id, entry in routed.items():
        if request_id in received_ids:
            continue
        attempts = outcomes.get(request_id, set())
        if attempts == {"failed"}:
            never_sent += 1  # every attempt failed before a service took it: nothing was carried anywhere
            continue
        how = "answered" if "ok" in attempts else "with no attempt recorded"
        breaches.append(Breach(request_id, entry.stage, f"routed ({how}), but no service received it"))
    routed_and_received = len(received_ids & routed.keys())
    return AuditReport(checked, tuple(files), tuple(breaches), len(routed), routed_and_received, never_sent)
