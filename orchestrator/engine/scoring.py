"""Judging records under a prompt through the judge service, with the run's prediction cache.

Used by the optimization loop (training batches, validation, test), the interference experiment and the scoring
of new data: an unchanged prompt on the same samples costs no LLM call (the cache key holds the prompt, the
sample, the judge's routing and model settings, and the run's seed, so repeated runs stay independent samples).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from typing import Any

import structlog

from judgeopt.orchestrator import convert
from judgeopt.orchestrator.agent_clients import AgentClients
from judgeopt.orchestrator.data.records import CriterionSpec, Record
from judgeopt.orchestrator.engine.artifacts import PromptState, ScoredSample, content_id
from judgeopt.orchestrator.engine.executor import CallExecutor
from judgeopt.orchestrator.engine.metrics import Evaluation, evaluate, halo
from judgeopt.orchestrator.engine.router import RoutedCall, Router
from judgeopt.orchestrator.engine.store import RunStore
from judgeopt.v1 import common_pb2, judge_pb2

log = structlog.get_logger(__name__)


class Scorer:
    def __init__(
        self,
        *,
        router: Router,
        executor: CallExecutor,
        clients: AgentClients,
        store: RunStore,
        cache_salt: tuple[object, ...],
        use_cache: bool = True,
    ) -> None:
        self.router = router
        self.executor = executor
        self.clients = clients
        self.store = store
        self._salt = cache_salt
        self._use_cache = use_cache
        """Answer an unchanged prompt on the same sample from the run's cache; off, every scoring asks the judge."""
        self._weighting_asked = store.holds_run() and store.manifest().models.for_role("judge").logprobs

    def _key(self, prompt: PromptState, call: RoutedCall[judge_pb2.ScoreRequest]) -> str:
        return content_id([prompt.id, call.criteria, call.sample_id, call.routing, *self._salt])

    async def score(
        self, prompt: PromptState, records: Sequence[Record], *, step: int, purpose: str
    ) -> list[ScoredSample | None]:
        """One prediction per record (``None`` where a call failed after its retry budget), in record order."""
        self.router.step = step
        state = self.router.state()
        per_record = [self.router.judge(prompt, record, state) for record in records]
        keyed = [[(self._key(prompt, call), call) for call in calls] for calls in per_record]
        found: dict[str, ScoredSample] = {}
        pending: list[tuple[str, RoutedCall[judge_pb2.ScoreRequest]]] = []
        for key, call in (pair for calls in keyed for pair in calls):
            hit = self.store.cached_prediction(key) if self._use_cache else None
            if hit is None:
                pending.append((key, call))
            else:
                found[key] = hit
        track = self.router.track
        replies = await asyncio.gather(
            *(self.executor.send(c, self.clients.score, track=track, step=step, purpose=purpose) for _, c in pending)
        )
        for (key, _call), reply in zip(pending, replies, strict=True):
            if reply is not None:
                found[key] = convert.scored_sample(reply.prediction)
                self.store.cache_prediction(key, prompt.id, found[key])
        answered = [reply.prediction for reply in replies if reply is not None]
        count_scoring_methods(self.store, answered, weighting_asked=self._weighting_asked)
        results: list[ScoredSample | None] = []
        for record, calls in zip(records, keyed, strict=True):
            parts = [found.get(key) for key, _ in calls]
            complete = [p for p in parts if p is not None]
            results.append(merge_parts(record.id, complete) if len(complete) == len(parts) else None)
        return results


_WEIGHTING_WARNED = "warned_logprob_weighting"
"""Meta key: the run has warned that logprob weighting could not be applied (once per run, resumes included)."""


def count_scoring_methods(
    store: RunStore, predictions: Sequence[common_pb2.Prediction], *, weighting_asked: bool
) -> None:
    """Add the judge's valid scores, by how it obtained them, to the run's count; the first time logprob weighting
    was asked for and a score came back sampled, say so (once per run, resumes included)."""
    counts = Counter(
        "logprob_weighted" if s.method == common_pb2.SCORING_METHOD_LOGPROB_WEIGHTED else "sampled"
        for prediction in predictions
        for s in prediction.scores
        if s.HasField("value")
    )
    if not counts:
        return
    store.count_scoring_methods(counts)
    if weighting_asked and counts["sampled"] and not store.get_meta(_WEIGHTING_WARNED, False):
        store.set_meta(_WEIGHTING_WARNED, True)
        log.warning(
            "judge.logprob_weighting_not_applied",
            sampled=counts["sampled"],
            weighted=counts["logprob_weighted"],
            why="the endpoint sent no usable log probabilities, or a scale is beyond single digits",
        )


def merge_parts(sample_id: str, parts: Sequence[ScoredSample]) -> ScoredSample:
    """Per-criterion judge calls of one sample as one prediction."""
    if len(parts) == 1:
        return parts[0]
    return ScoredSample(
        sample_id=sample_id,
        scores={k: v for p in parts for k, v in p.scores.items()},
        statuses={k: v for p in parts for k, v in p.statuses.items()},
        raw_output="\n".join(p.raw_output for p in parts),
    )


def evaluation_of(
    criteria: Sequence[CriterionSpec],
    records: Sequence[Record],
    scored: Sequence[ScoredSample | None],
    bootstrap_resamples: int,
    seed: int,
) -> Evaluation:
    names = [c.name for c in criteria]
    predictions = {n: [s.scores.get(n) if s else None for s in scored] for n in names}
    truths = {n: [r.labels[n] for r in records] for n in names}
    within = {c.name: c.off_by_one_width for c in criteria}
    return evaluate(predictions, truths, bootstrap_resamples=bootstrap_resamples, seed=seed, within=within)


_WHY_UNUSABLE = {
    "OUT_OF_RANGE": "out of range",
    "MISSING": "missing from the reply",
    "INVALID": "unreadable",
    "TRUNCATED": "cut off at the output cap",
}
"""Parse statuses (``convert.status_name``) as a cause."""


def no_valid_score(scored: Sequence[ScoredSample | None]) -> str | None:
    """Why the judge's replies held no valid score at all, e.g. ``"12 scores: 8 out of range, 4 unreadable"``;
    ``None`` when some score is valid or no reply came (failed calls are another failure)."""
    answered = [s for s in scored if s is not None]
    if not answered or any(v is not None for s in answered for v in s.scores.values()):
        return None
    causes = Counter(convert.status_name(status) for s in answered for status in s.statuses.values())
    shown = ", ".join(f"{count} {_WHY_UNUSABLE.get(name, name.lower())}" for name, count in causes.most_common())
    return f"{sum(causes.values())} scores: {shown}"


def evaluation_json(
    evaluation: Evaluation, scored: Sequence[ScoredSample | None], records: Sequence[Record]
) -> dict[str, Any]:
    """The figures of one evaluation as stored with its step; ``no_valid_score`` (the cause) only when the judge
    answered without a single valid score. ``halo``: the mean correlation between criteria of the judge's scores
    and of the human labels (:func:`~judgeopt.orchestrator.engine.metrics.halo`)."""
    parsed = sum(1 for s in scored if s is not None for v in s.scores.values() if v is not None)
    expected = len(scored) * len(evaluation.per_criterion)
    unusable = no_valid_score(scored)
    return ({} if unusable is None else {"no_valid_score": unusable}) | {
        "macro_rho": evaluation.macro_spearman,
        "macro_mae": evaluation.macro_mae,
        "rho": {n: m.spearman for n, m in evaluation.per_criterion.items()},
        "rho_ci": {n: m.spearman_ci for n, m in evaluation.per_criterion.items()},
        "constant": sorted(n for n, m in evaluation.per_criterion.items() if m.constant),
        "kendall": {n: m.kendall for n, m in evaluation.per_criterion.items()},
        "pearson": {n: m.pearson for n, m in evaluation.per_criterion.items()},
        "mae": {n: m.mae for n, m in evaluation.per_criterion.items()},
        "off_by_one": {n: m.off_by_one for n, m in evaluation.per_criterion.items()},
        "alpha_interval": {n: m.alpha_interval for n, m in evaluation.per_criterion.items()},
        "alpha_ordinal": {n: m.alpha_ordinal for n, m in evaluation.per_criterion.items()},
        "kappa_quadratic": {n: m.kappa_quadratic for n, m in evaluation.per_criterion.items()},
        "parsed_share": parsed / expected if expected else 0.0,
        "n": len(scored),
        "failed_calls": sum(s is None for s in scored),
        "halo": {
            "judge": halo({n: [s.scores.get(n) if s else None for s in scored] for n in evaluation.per_criterion}),
            "human": halo({n: [r.labels[n] for r in records] for n in evaluation.per_criterion}),
        },
    }
