"""A run directory read back as plain values: its summary, steps, prompts and the judge's stored predictions."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from judgeopt.api._common import PathLike, StorageError, pandas, translated_errors
from judgeopt.api.judges import Judge
from judgeopt.core.errors import ConfigError
from judgeopt.orchestrator.engine.artifacts import ScoredSample
from judgeopt.orchestrator.engine.manifest import RunStatus
from judgeopt.orchestrator.engine.run import open_run as open_store
from judgeopt.orchestrator.engine.scoring import merge_parts
from judgeopt.orchestrator.engine.store import RunStore, StepRecord
from judgeopt.orchestrator.engine.summary import SUMMARY_FILE, build_summary
from judgeopt.orchestrator.study.export import export_judge
from judgeopt.orchestrator.study.routing_interference import stored as stored_measurement

StepRef = int | Literal["best", "best_oracle"]
"""A step number, or the best step chosen on validation (``best``) or on the test set (``best_oracle``)."""
Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class Step:
    """One finished step of one track: ``all`` holds every criterion, except in Single-Task runs (mode
    ``single``), which have one track per criterion."""

    step: int
    track: str
    status: str
    """``initial`` (step 0), ``accepted``, ``rejected`` (by the gate) or ``failed`` (too many failed calls)."""
    accepted: bool | None
    """Whether the step's candidate prompt was kept; ``None`` at step 0."""
    val_metric: float | None
    """The gate's validation metric of the prompt in effect after the step."""
    macro_rho: float | None
    """Mean Spearman ρ over the track's criteria on the test set; ``None`` at a step without a test evaluation."""
    rho: dict[str, float] | None = field(hash=False)
    """Spearman ρ per criterion on the test set (``None`` as ``macro_rho``)."""


@dataclass(frozen=True)
class Prediction:
    """The judge's scores of one sample under the prompt in effect after a step (``None`` where it failed)."""

    step: int
    track: str
    split: Split
    sample_id: str
    scores: dict[str, float | None] = field(hash=False)


def _step(record: StepRecord) -> Step:
    test = record.test or {}
    return Step(
        step=record.step,
        track=record.track,
        status=record.status,
        accepted=None if record.step == 0 else record.status == "accepted",
        val_metric=record.val_metric,
        macro_rho=test.get("macro_rho"),
        rho=test.get("rho"),
    )


def _by_sample(parts: Sequence[ScoredSample]) -> dict[str, ScoredSample]:
    grouped: dict[str, list[ScoredSample]] = {}
    for part in parts:
        grouped.setdefault(part.sample_id, []).append(part)
    return {sample_id: merge_parts(sample_id, same) for sample_id, same in grouped.items()}


@dataclass(frozen=True)
class Run:
    """A run directory (``run.sqlite``, ``summary.json``, ``services/``). Every read opens the store afresh, so a
    run still going elsewhere can be watched."""

    path: Path

    @contextlib.contextmanager
    def _store(self) -> Iterator[RunStore]:
        with translated_errors():
            store = open_store(self.path)
            try:
                yield store
            finally:
                store.close()

    @property
    def summary(self) -> dict[str, Any]:
        """``summary.json`` as written at the run's end, or the same computed from the store while it has none (a
        run still going, or killed)."""
        file = self.path / SUMMARY_FILE
        with translated_errors():
            if file.is_file():
                try:
                    summary: dict[str, Any] = json.loads(file.read_text(encoding="utf-8"))
                except ValueError as exc:
                    raise StorageError(f"{file}: not JSON ({exc})") from None
                return summary
        with self._store() as store:
            return build_summary(store)

    @property
    def status(self) -> RunStatus:
        """``running`` (or killed: ``judgeopt resume`` continues it), ``complete`` or ``budget_reached``."""
        with self._store() as store:
            status = store.status
        if status is None:
            raise StorageError(f"{self.path}: the run store records no status")
        return status

    def steps(self) -> list[Step]:
        """Every finished step of every track, by step then track."""
        with self._store() as store:
            return [_step(record) for record in store.steps()]

    def prompts(self) -> dict[int, dict[str, str]]:
        """Per step that every track finished, the instruction of each criterion in effect after it."""
        with self._store() as store:
            manifest = store.manifest()
            by_step: dict[int, dict[str, StepRecord]] = {}
            for record in store.steps():
                by_step.setdefault(record.step, {})[record.track] = record
        prompts = {}
        for number, records in sorted(by_step.items()):
            if set(records) == set(manifest.tracks):
                instructions = {name: text for r in records.values() for name, text in r.prompt.instructions}
                prompts[number] = {name: instructions[name] for name in manifest.criterion_names}
        return prompts

    def prompt(self, step: StepRef = "best") -> dict[str, str]:
        """The instruction of each criterion at ``step``."""
        return self.prompts()[self._step_number(step)]

    def predictions(self, split: Split = "test", step: StepRef | None = None) -> list[Prediction]:
        """The judge's stored predictions on ``split`` under the prompt in effect after ``step`` (every step when
        ``None``), by step, track and the split's sample order. Only what the run judged is there: val and test
        at the steps that evaluated them, train for the batch samples the next step judged with that prompt."""
        if split not in SPLITS:
            raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        wanted = None if step is None else self._step_number(step)
        predictions: list[Prediction] = []
        with self._store() as store:
            sample_ids = store.manifest().splits[split]
            found: dict[str, dict[str, ScoredSample]] = {}
            for record in store.steps():
                if wanted is not None and record.step != wanted:
                    continue
                prompt = record.prompt
                if prompt.id not in found:
                    found[prompt.id] = _by_sample(store.predictions_of(prompt.id))
                scored = found[prompt.id]
                predictions += [
                    Prediction(
                        record.step, record.track, split, i, {c: scored[i].scores.get(c) for c in prompt.criteria}
                    )
                    for i in sample_ids
                    if i in scored
                ]
        return predictions

    def judge(self, step: StepRef = "best") -> Judge:
        """The judge at ``step``, as ``judgeopt export`` writes it (save it with :meth:`Judge.save`): judging with the
        routing that won on validation when the run holds that step's ``judgeopt interference`` measurement (none is
        made here), else as the run judged."""
        self._step_number(step)
        with translated_errors():
            measurement = stored_measurement(self.path, str(step))
            return Judge(export_judge(self.path, str(step), measurement.choice() if measurement else None))

    def steps_frame(self) -> Any:
        """:meth:`steps` as a pandas DataFrame, with one ``rho_<criterion>`` column per criterion (needs pandas)."""
        pd = pandas()
        rows = [
            {**{k: v for k, v in asdict(s).items() if k != "rho"}, **{f"rho_{c}": v for c, v in (s.rho or {}).items()}}
            for s in self.steps()
        ]
        return pd.DataFrame(rows)

    def predictions_frame(self, split: Split = "test", step: StepRef | None = None) -> Any:
        """:meth:`predictions` as a pandas DataFrame, with one column per criterion (needs pandas)."""
        pd = pandas()
        rows = [
            {"step": p.step, "track": p.track, "split": p.split, "sample_id": p.sample_id, **p.scores}
            for p in self.predictions(split, step)
        ]
        return pd.DataFrame(rows)

    def _step_number(self, step: StepRef) -> int:
        summary = self.summary
        if step in ("best", "best_oracle"):
            chosen = summary[str(step)]
            if chosen is None:
                raise ConfigError(f"the run has no {step} step yet (no test evaluation)")
            return int(chosen["step"])
        complete = [s["step"] for s in summary["steps"]]
        if isinstance(step, int) and not isinstance(step, bool) and step in complete:
            return step
        raise ConfigError(f"step must be 'best', 'best_oracle' or a complete step of the run {complete}, got {step!r}")


def open_run(path: PathLike) -> Run:
    """The run in ``path`` (a directory ``optimize`` or ``judgeopt optimize`` wrote)."""
    run = Run(Path(path))
    with run._store():  # refuses a directory that holds no run
        return run
