"""The optimization loop: per step and track, judge → loss → gradient → optimizer on a seeded mini-batch, then
the validation gate and, at the test interval, the test evaluation.

A *track* is one independently optimized prompt: one track with every criterion for SSS/SSC/SCC/CCC, one track
per criterion for Single-Task. Tracks advance step by step and can be resumed separately from the store. Every
independent call of a stage runs concurrently under the executor's one limit; stages run in order; results are
gathered in (sample, criterion) order, never completion order, so a run is reproducible. With tracing on, each
step is a span (``step``), and within it each stage (``stage learn``, ``stage arbitrate``, ``stage optimize``,
``stage evaluate``), around the executor's call spans; a pipelined step's test evaluation stays under its step.

Steps are pipelined (``pipeline_steps``): once the gate has decided step t, the next step's training starts while
step t's test evaluation runs (its calls fill the slots training leaves free: see ``priority``). Nothing the next
step does depends on test figures, so the results are those of running the steps one after the other. A step is
committed only with its test figures, and before the next one: a run stopped during the overlap resumes from the
last committed step, and redoes the step whose test evaluation had not finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import structlog

from judgeopt.core.tracing import span
from judgeopt.orchestrator import convert
from judgeopt.orchestrator.agent_clients import AgentClients
from judgeopt.orchestrator.config import RunConfig
from judgeopt.orchestrator.data.records import CriterionSpec, Record, Splits, shown_criteria
from judgeopt.orchestrator.engine.artifacts import Conflict, FocusRecord, PromptState, ScoredSample, StepArtifacts
from judgeopt.orchestrator.engine.budget import RunBudget, StepShape, spend_by_role, tests_at
from judgeopt.orchestrator.engine.executor import CallExecutor
from judgeopt.orchestrator.engine.focus import focus_shares
from judgeopt.orchestrator.engine.lengths import instruction_limits
from judgeopt.orchestrator.engine.metrics import Evaluation
from judgeopt.orchestrator.engine.pareto import ArchiveMember, admitted, drop_intervals, regressions, worst_errors
from judgeopt.orchestrator.engine.policy import Policy
from judgeopt.orchestrator.engine.recombine import recombine, stitching
from judgeopt.orchestrator.engine.router import RoutedCall, Router
from judgeopt.orchestrator.engine.scoring import Scorer, evaluation_json, evaluation_of
from judgeopt.orchestrator.engine.store import RunStore, StepRecord
from judgeopt.orchestrator.errors import RunFailed

log = structlog.get_logger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class LoopSettings:
    run: RunConfig
    """The run's settings (steps, batch size, gate, seed, retries, …), as stored in its manifest."""
    judge_key: str
    """Identifies the judge's model settings in the prediction cache."""
    budget: RunBudget | None = None
    shapes: Mapping[str, StepShape] = field(default_factory=dict)
    """Per track, what the budget check needs to estimate a step's calls."""


@dataclass(frozen=True)
class Track:
    name: str
    criteria: tuple[CriterionSpec, ...]
    initial: PromptState


def _require_scores(track: Track, step: int, split: str, figures: dict[str, Any]) -> None:
    """A ``RunFailed`` naming the cause when the judge answered on ``split`` without a single valid score: figures
    made of nothing (every ρ 0, "constant") must not pass for a result."""
    if "no_valid_score" in figures:
        raise RunFailed(
            f"track {track.name}, step {step}: the judge gave no valid score on the {split} set "
            f"({figures['no_valid_score']}); check the judge's model and instructions, then `judgeopt resume` the run"
        )


def _unparsed(artifacts: StepArtifacts, batch: Sequence[Record], track: Track) -> bool:
    """Some sample of the batch has no prediction, or a criterion the judge did not score."""
    if len(artifacts.predictions) < len(batch):
        return True
    return any(p.scores.get(c.name) is None for p in artifacts.predictions for c in track.criteria)


@dataclass
class _Tally:
    failed: int = 0
    total: int = 0

    def add(self, replies: Sequence[object | None]) -> None:
        self.total += len(replies)
        self.failed += sum(r is None for r in replies)


@dataclass
class StepOutcome:
    record: StepRecord
    artifacts: StepArtifacts | None = field(default=None)


@dataclass(frozen=True)
class _Evaluated:
    """A prompt scored on a split: its figures, as stored, and the judge's scores item by item."""

    evaluation: Evaluation
    figures: dict[str, Any]
    scored: list[ScoredSample | None]


ProgressHook = Callable[[str, int], None]


class OptimizationLoop:
    def __init__(
        self,
        *,
        policy: Policy,
        tracks: Sequence[Track],
        splits: Splits,
        settings: LoopSettings,
        clients: AgentClients,
        executor: CallExecutor,
        store: RunStore,
        run_id: str,
        on_step: ProgressHook | None = None,
    ) -> None:
        self.policy = policy
        self.tracks = tuple(tracks)
        self.splits = splits
        self.settings = settings
        self.clients = clients
        self.executor = executor
        self.store = store
        self.run_id = run_id
        self._on_step = on_step
        self.budget_reached = False
        self._routers = {t.name: self._router(t) for t in tracks}
        self._scorers = {name: self._scorer(router) for name, router in self._routers.items()}
        # The test evaluation of a step overlaps the next step's training: it routes on a router of its own, set
        # to its own step and attempt (request ids follow from those, so they are the ids of an unpipelined run).
        self._test_scorers = {t.name: self._scorer(self._router(t)) for t in tracks}

    def _router(self, track: Track) -> Router:
        return Router(
            self.policy,
            self._shown_criteria(track),
            run_id=self.run_id,
            track=track.name,
            protocol=self.settings.run.prompt_protocol,
        )

    def _scorer(self, router: Router) -> Scorer:
        return Scorer(
            router=router,
            executor=self.executor,
            clients=self.clients,
            store=self.store,
            cache_salt=(self.settings.judge_key, self.settings.run.seed),
            use_cache=not self.settings.run.rejudge_unchanged_prompts,
        )

    def _shown_criteria(self, track: Track) -> tuple[CriterionSpec, ...]:
        """The track's criteria as the agents are shown them: without their definitions when the run says so."""
        return shown_criteria(track.criteria, definitions=self.settings.run.criterion_definitions)

    # --- the whole run ---------------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run (or resume) every track to the last step."""
        await asyncio.gather(*(self._run_track(track) for track in self.tracks))

    async def _run_track(self, track: Track) -> None:
        """Decide each step, then test and commit it; pipelined, while the next step is being decided."""
        last = self.store.last_step(track.name)
        finishing: asyncio.Task[None] | None = None  # the previous step's test evaluation and commit
        try:
            while last is None or last.step < self.settings.run.steps:
                step = 0 if last is None else last.step + 1
                if finishing is not None and self.settings.budget is not None:
                    await finishing  # the budget decides on what the previous step's test actually spent
                if not self._within_budget(track, step):
                    break
                deciding = self._initial_step(track) if last is None else self._training_step(track, last)
                with span("step", track=track.name, step=step) as traced:
                    decided = await _alongside(deciding, finishing)
                    record = decided.record
                    traced.set(status=record.status, val_metric=record.val_metric, attempts=record.attempts)
                    finishing = None
                    finish = self._finish(track, decided)
                    if self.settings.run.pipeline_steps and self._tests_at(step):
                        finishing = asyncio.create_task(finish)  # created here, its spans stay under this step
                    else:
                        await finish
                last = decided.record
            if finishing is not None:
                await finishing
                finishing = None
            if last is not None and last.step == self.settings.run.steps and self._recombines(track):
                await self._recombine_within_budget(track, last)
        finally:
            if finishing is not None and not finishing.done():  # this track failed or was cancelled meanwhile
                finishing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await finishing

    async def _finish(self, track: Track, decided: StepOutcome) -> None:
        """Score the decided step's prompt on the test split when the step is due one, then commit the step."""
        record = decided.record
        test = await self._test_json(track, record.prompt, record.step, attempt=record.attempts)
        self._commit(track, replace(decided, record=replace(record, test=test)))

    def _recombines(self, track: Track) -> bool:
        return self.settings.run.archive_recombine and len(track.criteria) > 1

    async def _recombine_within_budget(self, track: Track, last: StepRecord) -> None:
        if self._within_budget(track, last.step):
            await self._recombination_step(track, last)

    def _within_budget(self, track: Track, step: int) -> bool:
        """False (and the run marked as stopped) when the step could take the run past its budget."""
        budget, settings = self.settings.budget, self.settings
        if budget is None:
            return True
        shape = settings.shapes[track.name]
        estimate = shape.initial() if step == 0 else shape.training(with_test=self._tests_at(step))
        calls, tokens = self.store.spent()
        cost = sum(spend_by_role(budget.models, self.store.usage_by_role()).values()) if budget.models else 0.0
        if budget.allows(calls, tokens, estimate, cost):
            return True
        self.budget_reached = True
        log.warning("budget.reached", track=track.name, step=step, calls=calls, tokens=tokens, cost=round(cost, 4))
        return False

    def _commit(self, track: Track, outcome: StepOutcome) -> StepRecord:
        self.store.commit_step(outcome.record, outcome.artifacts, self._admit(track, outcome.record))
        log.info(
            "step.done",
            track=track.name,
            step=outcome.record.step,
            status=outcome.record.status,
            val_metric=outcome.record.val_metric,
        )
        if self._on_step is not None:
            self._on_step(track.name, outcome.record.step)
        return outcome.record

    # --- evaluation ------------------------------------------------------------------------------------------------

    async def _evaluate(
        self, track: Track, prompt: PromptState, records: Sequence[Record], *, step: int, purpose: str
    ) -> _Evaluated:
        scorer = (self._test_scorers if purpose == "test" else self._scorers)[track.name]
        with span("stage evaluate", stage="evaluate", track=track.name, step=step, purpose=purpose, items=len(records)):
            scored = await scorer.score(prompt, records, step=step, purpose=purpose)
        # Intervals are reported for test figures only; bootstrapping validation would sit on every step's path.
        resamples = self.settings.run.bootstrap_resamples if purpose == "test" else 0
        evaluation = evaluation_of(track.criteria, records, scored, resamples, self.settings.run.seed)
        figures = evaluation_json(evaluation, scored, records)
        if purpose == "val":  # every gate keeps the archive, on the gate metric's per-criterion values
            figures["gate_values"] = self._gate_values(evaluation, track)
        return _Evaluated(evaluation, figures, scored)

    @property
    def _pareto(self) -> bool:
        return self.settings.run.gate == "pareto"

    def _gate_metric(self, evaluation: Evaluation, track: Track) -> float:
        """The macro value the gate compares (with the Pareto gate: its per-criterion metric's macro average)."""
        gate = self.settings.run.gate
        name = {"none": "mae", "pareto": self.settings.run.gate_metric}.get(gate, gate)
        if not self.settings.run.gate_counts_parse_failures:
            return evaluation.metric(name)  # the study's: items the judge failed to score are left out
        return evaluation.metric(name, worst_errors=worst_errors(track.criteria))

    def _gate_values(self, evaluation: Evaluation, track: Track) -> dict[str, float]:
        """Per criterion, the Pareto gate's metric (oriented: higher is better), counting parse failures as the
        scalar gate does."""
        worst = worst_errors(track.criteria) if self.settings.run.gate_counts_parse_failures else None
        return evaluation.values(self.settings.run.gate_metric, worst_errors=worst)

    async def _regressed(
        self, track: Track, last: StepRecord, candidate: _Evaluated, step: int
    ) -> tuple[list[str], dict[str, tuple[float, float]] | None]:
        """The criteria on which the candidate falls more than ``gate_epsilon`` below the current prompt, and the
        drops' bootstrap intervals when the run asks for them (the current prompt's validation scores then come
        from the prediction cache: no call unless the run re-judges unchanged prompts)."""
        run = self.settings.run
        assert last.val is not None
        before, after = last.val["gate_values"], candidate.figures["gate_values"]
        intervals = None
        if run.gate_drop_interval:
            current = await self._evaluate(track, last.prompt, self.splits.val, step=step, purpose="val")
            names = [c.name for c in track.criteria]

            def scores(scored: Sequence[ScoredSample | None]) -> dict[str, list[float | None]]:
                return {n: [s.scores.get(n) if s else None for s in scored] for n in names}

            intervals = drop_intervals(
                scores(current.scored),
                scores(candidate.scored),
                {n: [r.labels[n] for r in self.splits.val] for n in names},
                metric=run.gate_metric,
                worst=worst_errors(track.criteria) if run.gate_counts_parse_failures else None,
                resamples=run.bootstrap_resamples,
                seed=run.seed + step,
            )
        return regressions(before, after, run.gate_epsilon, intervals), intervals

    def _admit(self, track: Track, record: StepRecord) -> list[ArchiveMember]:
        """The track's archive after ``record``: a prompt the track now holds is offered to it (a run stored before
        every gate kept an archive has no per-criterion values to offer)."""
        archive = self.store.archive(track.name)
        if record.status not in ("initial", "accepted") or record.val is None or "gate_values" not in record.val:
            return archive
        member = ArchiveMember(record.step, record.prompt.id, dict(record.val["gate_values"]))
        return admitted(archive, member, [c.name for c in track.criteria])

    def _tests_at(self, step: int) -> bool:
        return tests_at(step, self.settings.run.steps, self.settings.run.test_interval)

    # --- steps -------------------------------------------------------------------------------------------------------

    async def _initial_step(self, track: Track) -> StepOutcome:
        """Step 0 scores the initial prompt on validation (its test evaluation is the step's finish)."""
        val = await self._evaluate(track, track.initial, self.splits.val, step=0, purpose="val")
        val_json = val.figures
        if "no_valid_score" in val_json:  # the run fails: say why as it would once the test scores were in
            test_json = (await self._evaluate(track, track.initial, self.splits.test, step=0, purpose="test")).figures
            evaluated = val_json["n"] + test_json["n"]
            if evaluated and val_json["failed_calls"] + test_json["failed_calls"] == evaluated:
                raise RunFailed(
                    f"track {track.name}, step 0: every judge call failed after its retries (see the calls table of "
                    "run.sqlite); check the judge endpoint, then `judgeopt resume` the run"
                )
            _require_scores(track, 0, "validation", val_json)
        record = StepRecord(
            track=track.name,
            step=0,
            status="initial",
            prompt=track.initial,
            candidate=None,
            val_metric=self._gate_metric(val.evaluation, track),
            val=val_json,
            test=None,
            batch=(),
        )
        return StepOutcome(record)

    def _batch(self, step: int) -> tuple[Record, ...]:
        seed = "study" if self.settings.run.same_batches_every_run else self.settings.run.seed
        rng = random.Random(f"{seed}:batch:{step}")
        size = min(self.settings.run.batch_size, len(self.splits.train))
        return tuple(rng.sample(self.splits.train, size))

    async def _training_step(self, track: Track, last: StepRecord) -> StepOutcome:
        """Train on the step's batch and gate the candidate (the test evaluation is the step's finish)."""
        step = last.step + 1
        batch = self._batch(step)
        current = last.prompt
        attempts = 0
        while True:
            attempts += 1
            self._routers[track.name].attempt = attempts
            artifacts, tally, updates = await self._learn(track, current, batch, step)
            too_many = tally.total > 0 and tally.failed / tally.total > self.settings.run.max_failure_share
            if self.settings.run.training_parse_failure_fails_step and _unparsed(artifacts, batch, track):
                too_many = True  # the study code's quirk: one judge reply that does not parse fails the batch
            if not too_many or attempts > self.settings.run.step_retries:
                break
            log.warning("step.retry", track=track.name, step=step, failed=tally.failed, total=tally.total)
        template = StepRecord(
            track=track.name,
            step=step,
            status="failed",
            prompt=current,
            candidate=None,
            val_metric=last.val_metric,
            val=last.val,
            test=None,
            batch=tuple(r.id for r in batch),
            failed_calls=tally.failed,
            total_calls=tally.total,
            attempts=attempts,
        )
        if too_many:  # rolled back: the prompt stays as it was
            return StepOutcome(template, artifacts)
        candidate = current.replaced(updates)
        if self.settings.run.drop_output_format_after_update and candidate != current:
            candidate = PromptState(candidate.task_description, candidate.instructions, omit_output_format=True)
        record, _ = await self._gated(track, last, template, candidate)
        return StepOutcome(record, artifacts)

    async def _gated(
        self, track: Track, last: StepRecord, template: StepRecord, candidate: PromptState
    ) -> tuple[StepRecord, dict[str, Any]]:
        """``template`` (a failed step at ``template.step``) decided by the gate: the candidate scored on validation
        and accepted or rejected against ``last``; with its validation figures. No test figures yet."""
        step = template.step
        val = await self._evaluate(track, candidate, self.splits.val, step=step, purpose="val")
        val_json = val.figures
        candidate_metric = self._gate_metric(val.evaluation, track)
        unusable = "no_valid_score" in val_json  # under the candidate the judge gave no valid score: the step fails
        if unusable:
            log.warning("step.no_valid_score", track=track.name, step=step, cause=val_json["no_valid_score"])
        if self._pareto and not unusable:
            regressed, intervals = await self._regressed(track, last, val, step)
            val_json["regressed"] = regressed
            if intervals is not None:
                val_json["drop_ci"] = {c: list(i) for c, i in intervals.items()}
            passes = not regressed
        else:
            passes = self.settings.run.gate == "none" or last.val_metric is None or candidate_metric >= last.val_metric
        if passes and not unusable:
            record = replace(template, status="accepted", prompt=candidate, val_metric=candidate_metric, val=val_json)
        else:
            status = "failed" if unusable else "rejected"
            record = replace(template, status=status, val={**(last.val or {}), "candidate": val_json})
        return replace(record, candidate=candidate), val_json

    async def _recombination_step(self, track: Track, last: StepRecord) -> None:
        """Step ``steps + 1``: the prompt stitched from the archive, gated against the prompt the track holds and
        tested when accepted; its validation figures carry ``recombination`` (each criterion's source step and its
        validation ρ there and stitched). Nothing is recorded when one member is best on every criterion."""
        held = {r.step: r for r in self.store.steps(track.name) if r.status in ("initial", "accepted")}
        names = [c.name for c in track.criteria]
        stitched = recombine(last.prompt, {s: r.prompt for s, r in held.items()}, self.store.archive(track.name), names)
        if stitched is None:
            log.info("recombination.skipped", track=track.name, reason="one archive member is best on every criterion")
            return
        step = last.step + 1
        template = StepRecord(
            track=track.name,
            step=step,
            status="failed",
            prompt=last.prompt,
            candidate=None,
            val_metric=last.val_metric,
            val=last.val,
            test=None,
            batch=(),
        )
        record, val_json = await self._gated(track, last, template, stitched.prompt)
        source_rho = {s: (held[s].val or {})["rho"] for s in set(stitched.sources.values())}
        losses = stitching(stitched.sources, source_rho, val_json["rho"])
        provenance = {"sources": stitched.sources, "stitching": losses}
        accepted = record.status == "accepted"
        test = (
            await self._test_json(track, record.prompt, step, attempt=record.attempts, always=True)
            if accepted
            else None
        )
        record = replace(record, val={**(record.val or {}), "recombination": provenance}, test=test)
        self._commit(track, StepOutcome(record))

    async def _test_json(
        self, track: Track, prompt: PromptState, step: int, *, attempt: int, always: bool = False
    ) -> dict[str, Any] | None:
        if not (always or self._tests_at(step)):
            return None
        self._test_scorers[track.name].router.attempt = attempt
        test_json = (await self._evaluate(track, prompt, self.splits.test, step=step, purpose="test")).figures
        _require_scores(track, step, "test", test_json)
        return test_json

    async def _arbitrate(
        self,
        router: Router,
        artifacts: StepArtifacts,
        send_all: Callable[[Sequence[RoutedCall[Any]], Callable[[Any], Awaitable[Any]], str], Awaitable[list[Any]]],
    ) -> None:
        """The conflict arbiter between gradient and optimizer: the conflicts it finds go into the step's
        artifacts, with the resolution the joint optimizer call will carry. An unusable reply finds nothing."""
        calls = router.arbiter(artifacts.gradients, router.state(artifacts))
        for reply in await send_all(calls, self.clients.arbitrate, "arbiter"):
            if reply is None or reply.status not in convert.USABLE_STATUSES:
                continue
            pairs = [c for c in reply.conflicts if len(c.criteria) == 2]
            artifacts.conflicts += [Conflict((c.criteria[0], c.criteria[1]), c.issue) for c in pairs]
            if reply.conflicts:
                artifacts.resolution = reply.resolution

    async def _learn(
        self, track: Track, prompt: PromptState, batch: Sequence[Record], step: int
    ) -> tuple[StepArtifacts, _Tally, dict[str, str]]:
        """One pass of judge → loss → gradient → optimizer; returns the artifacts, the failures and the updates.

        Each sample's judge → loss → gradient chain depends on that sample alone, so the chains run side by side:
        a sample's loss calls start when its own judge answer arrives, not when the whole batch's has. The
        artifacts are assembled in batch order afterwards, so the optimizer's request does not depend on timing."""
        router = self._routers[track.name]
        router.step = step
        tally = _Tally()
        names = [c.name for c in track.criteria]

        async def send_all(
            calls: Sequence[RoutedCall[Any]], send: Callable[[Any], Awaitable[Any]], purpose: str = "train"
        ) -> list[Any]:
            replies = await asyncio.gather(
                *(self.executor.send(c, send, track=track.name, step=step, purpose=purpose) for c in calls)
            )
            tally.add(replies)
            return list(replies)

        async def learn_from(record: Record, scored: ScoredSample, own: StepArtifacts, purpose: str) -> None:
            """The sample's loss calls, then its gradient calls, as the policy routes them given what the sample's
            chain has produced so far (``own``); a gradient call goes out only for criteria some critique covers."""
            loss_calls = router.loss(record, scored, prompt, router.state(own))
            replies = await send_all(loss_calls, self.clients.critique, purpose)
            for loss_call, reply in zip(loss_calls, replies, strict=True):
                if reply is not None and reply.critique.status in convert.USABLE_STATUSES:
                    own.critiques.append(
                        convert.critique_of(reply, loss_call.request_id, record.id, loss_call.criteria)
                    )
            critiques = own.critiques_for(record.id, names)
            if (
                purpose == "fallback"
            ):  # a per-criterion fallback call sees its own criterion's critique, never a joint one
                critiques = [c for c in critiques if len(c.criteria) == 1]
            critiqued = {n for c in critiques for n in c.criteria}
            gradient_calls = [
                c
                for c in router.gradient(record, scored, critiques, prompt, router.state(own))
                if set(c.criteria) & critiqued
            ]
            replies = await send_all(gradient_calls, self.clients.gradient, purpose)
            for call, reply in zip(gradient_calls, replies, strict=True):
                if reply is not None and reply.gradient.status in convert.USABLE_STATUSES:
                    own.gradients.append(convert.gradient_of(reply, call.request_id, call.criteria))

        async def chain(record: Record) -> StepArtifacts:
            """The judge, loss and gradient work of one sample; with the specificity fallback, the focus of its
            joint gradient and, for the criteria it lost, per-criterion calls (``fallback`` in the calls table)."""
            own = StepArtifacts()
            (scored,) = await self._scorers[track.name].score(prompt, [record], step=step, purpose="train")
            tally.add([scored])
            if scored is None:
                return own
            own.predictions.append(scored)
            await learn_from(record, scored, own, "train")
            joint = [g for g in own.gradients if len(g.criteria) > 1]
            if self.policy.specificity_fallback is not None and joint:
                diluted = self.policy.diluted(router.state(own))
                own.focus.append(FocusRecord(record.id, joint[0].id, focus_shares(joint[0], names), diluted))
                if diluted:
                    await learn_from(record, scored, own, "fallback")
            return own

        artifacts = StepArtifacts()
        with span("stage learn", stage="learn", track=track.name, step=step, items=len(batch)):
            chains = await asyncio.gather(*(chain(record) for record in batch))
        for own in chains:
            artifacts.predictions.extend(own.predictions)
            artifacts.critiques.extend(own.critiques)
            artifacts.gradients.extend(own.gradients)
            artifacts.focus.extend(own.focus)

        if self.policy.conflict_arbiter and len(names) > 1:
            with span("stage arbitrate", stage="arbitrate", track=track.name, step=step):
                await self._arbitrate(router, artifacts, send_all)
        run = self.settings.run
        limits = instruction_limits(prompt, run.instruction_max_tokens, run.instruction_max_ratio)
        optimizer_calls = router.optimizer(
            prompt, artifacts.gradients, router.state(artifacts), batch, artifacts.resolution, limits
        )
        updates: dict[str, str] = {}
        with span("stage optimize", stage="optimize", track=track.name, step=step):
            optimized = await send_all(optimizer_calls, self.clients.step)
        for step_call, reply in zip(optimizer_calls, optimized, strict=True):
            if reply is None:
                continue
            for name in step_call.criteria:
                artifacts.optimizer_statuses[name] = reply.status
            artifacts.length_rejected.extend(reply.length_rejected)
            answered = {i.criterion: i.text for i in reply.instructions if i.criterion in step_call.criteria}
            if self.settings.run.prompt_protocol == "study":
                # The study resets a criterion its optimizer left out (or answered empty) to the initial instruction.
                updates.update({n: answered.get(n, track.initial.instruction(n)) for n in step_call.criteria})
            elif reply.status in convert.USABLE_STATUSES:
                updates.update(answered)
        return artifacts, tally, updates


async def _alongside(work: Coroutine[Any, Any, T], finishing: asyncio.Task[None] | None) -> T:
    """``work``'s result once ``finishing`` (the previous step's test evaluation and commit) is done too. A failure
    of ``finishing`` cancels ``work`` and is raised; a failure of ``work`` is raised once the previous step has
    finished and been committed, as it would have been before this step started without pipelining."""
    if finishing is None:
        return await work
    task = asyncio.ensure_future(work)
    try:
        done, _ = await asyncio.wait({task, finishing}, return_when=asyncio.FIRST_EXCEPTION)
        if finishing not in done:  # this step failed first: the previous one still finishes
            await finishing
        finishing.result()  # the previous step's failure comes first
        return task.result()
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
