"""The study's diagnostics of a finished run, rated by the evaluator service and stored per (step, criterion).

- **Specificity**: all gradients that speak about a criterion at a step, rated together (the study's unit) for
  how focused they are on that criterion. A joint gradient speaks about every criterion, so it is rated once per
  criterion — which is how gradient dilution shows. The evaluator is not told which criteria a gradient was
  written for: it judges from the text, as the study's did.
- **Adherence**: a criterion's rewritten instruction at a step (the candidate, accepted or not), rated against
  the gradients it was written from. Criteria whose instruction did not change are not rated.

The evaluator sees the criteria as the run's agents did (without definitions when the run gives none) and speaks
the run's prompt protocol (the study's rubrics under ``study``). Ratings already stored are not requested again,
so diagnostics resume like runs do.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from judgeopt.orchestrator import convert
from judgeopt.orchestrator.agent_clients import AgentClients
from judgeopt.orchestrator.data.records import shown_criteria
from judgeopt.orchestrator.engine.artifacts import Gradient
from judgeopt.orchestrator.engine.executor import CallExecutor
from judgeopt.orchestrator.engine.router import RoutedCall
from judgeopt.orchestrator.engine.store import Diagnostic, RunStore


async def rate_run(store: RunStore, clients: AgentClients, executor: CallExecutor) -> list[Diagnostic]:
    """Rate every (step, criterion) of the run that has gradients and is not rated yet; returns all ratings."""
    manifest = store.manifest()
    run_id, protocol = manifest.run_id, manifest.config.prompt_protocol
    specs = shown_criteria(manifest.criteria, definitions=manifest.config.criterion_definitions)
    by_name = {c.name: c for c in specs}
    done = {(d.track, d.step, d.criterion, d.kind) for d in store.diagnostics()}
    gradients: dict[tuple[str, int], list[Gradient]] = defaultdict(list)
    for track, step, gradient in store.gradients():
        gradients[(track, step)].append(gradient)
    steps = {(r.track, r.step): r for r in store.steps()}

    jobs: list[tuple[tuple[str, int, str, str], RoutedCall[Any], Callable[[Any], Awaitable[Any]]]] = []

    def routed(request: Any, kind: str, criterion: str) -> RoutedCall[Any]:
        request.meta.CopyFrom(convert.request_meta(uuid.uuid4().hex, run_id, f"diagnostics/{kind}"))
        if protocol != "judgeopt":
            request.meta.prompt_protocol = protocol
        return RoutedCall(request.meta.request_id, "evaluator", (criterion,), request, None)

    for (track, step), record in sorted(steps.items(), key=lambda item: item[0][1]):
        previous = steps.get((track, step - 1))
        for name in record.prompt.criteria:
            about: Sequence[Gradient] = [g for g in gradients.get((track, step), []) if name in g.criteria]
            if not about:
                continue
            if (track, step, name, "specificity") not in done:
                others = [c for c in specs if c.name != name]
                specificity = convert.specificity_request(by_name[name], others, about)
                key = (track, step, name, "specificity")
                jobs.append((key, routed(specificity, "specificity", name), clients.rate_specificity))
            candidate = record.candidate
            if previous is None or candidate is None or (track, step, name, "adherence") in done:
                continue
            old, new = previous.prompt.instruction(name), candidate.instruction(name)
            if old != new:
                adherence = convert.adherence_request(by_name[name], old, new, about)
                key = (track, step, name, "adherence")
                jobs.append((key, routed(adherence, "adherence", name), clients.rate_adherence))

    replies = await asyncio.gather(
        *(executor.send(call, send, track=key[0], step=key[1], purpose="diagnostics") for key, call, send in jobs)
    )
    for (track, step, name, kind), reply in zip((key for key, _, _ in jobs), replies, strict=True):
        if reply is None:
            continue  # the failed attempts are in the calls table; a later diagnostics pass retries
        score = reply.score if reply.HasField("score") else None
        store.record_diagnostic(Diagnostic(track, step, name, kind, score, int(reply.status), reply.rationale))
    return store.diagnostics()
