"""Experiment tracking in MLflow (the optional ``mlflow`` extra).

A run's settings become MLflow params; each committed step its figures (validation and test ρ, MAE, κ, α … per
criterion, their macro averages, the validation metric, tokens and cost so far) as metrics at that step, and its
prompt as a text artifact; the end of the run the summary's figures (best and initial ρ, Δ, HVI, calls, tokens,
cost) and ``summary.json``. An experiment grid is a parent MLflow run with one child run per cell.

Logging never holds up the optimization: a step's figures are read from the run's store when the step is committed
(a few SQLite reads) and sent to MLflow by one background thread. The first failure (mlflow not installed, a store
that cannot be reached or refuses a write) is one warning; tracking then stops and the run goes on.
``mlflow.json`` in the run (or experiment) directory names the MLflow run, so ``resume`` and ``report`` log into
the same one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import structlog

from judgeopt.core.private_files import write_private_text
from judgeopt.core.redact import redact, strip_url_credentials
from judgeopt.orchestrator.config import MlflowSettings
from judgeopt.orchestrator.engine.artifacts import PromptState
from judgeopt.orchestrator.engine.budget import spend_by_role
from judgeopt.orchestrator.engine.lengths import instruction_lengths
from judgeopt.orchestrator.engine.manifest import RunManifest
from judgeopt.orchestrator.engine.store import RunStore, StepRecord

log = structlog.get_logger(__name__)

TRACKING_FILE = "mlflow.json"
PER_CRITERION_METRICS = (
    "rho",
    "mae",
    "kendall",
    "pearson",
    "off_by_one",
    "alpha_interval",
    "alpha_ordinal",
    "kappa_quadratic",
)
"""The per-criterion figures of an evaluation logged at each step, as ``<split>.<figure>.<criterion>``."""
_BATCH = 100  # MLflow's limit of params per log_batch call


def recorded(directory: Path) -> tuple[MlflowSettings, str] | None:
    """The MLflow settings and run id a run or experiment directory was tracked with, if it was."""
    path = directory / TRACKING_FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    return MlflowSettings.model_validate(data["settings"]), str(data["run_id"])


def _finite(values: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if isinstance(v, int | float) and math.isfinite(v)}


def _key(name: str) -> str:
    """An MLflow metric or param key: letters, digits and ``_-. /``; anything else becomes ``_``."""
    return "".join(c if c.isalnum() or c in "_-. /" else "_" for c in name)


def prompt_text(prompt: PromptState) -> str:
    """A prompt as a text artifact: the task description, then each criterion's instruction under its name."""
    parts = [prompt.task_description.strip() or "(the agents' default task description)"]
    parts += [f"## {name}\n{text.strip()}" for name, text in prompt.instructions]
    return "\n\n".join(parts) + "\n"


def run_params(manifest: RunManifest) -> dict[str, str]:
    """The run's settings as flat params: every plain setting, the dataset's, the split sizes and each role's
    model name (never a key: the manifest holds none)."""
    params: dict[str, str] = {"mode": manifest.policy.name, "run_id": manifest.run_id}
    for name, value in manifest.config.model_dump(mode="json").items():
        if isinstance(value, dict):  # the dataset's settings; per-criterion maps are left out
            params |= {f"{name}.{k}": str(v) for k, v in value.items() if not isinstance(v, dict | list)}
        elif not isinstance(value, list):
            params[name] = str(value)
    params |= {f"size.{split}": str(len(ids)) for split, ids in manifest.splits.items()}
    params |= {f"model.{role}": name for role, name in manifest.model_names.items()}
    params["criteria"] = ",".join(manifest.criterion_names)
    return {_key(k): v[:6000] for k, v in params.items()}


def step_metrics(record: StepRecord, manifest: RunManifest, usage: Mapping[str, Mapping[str, int]]) -> dict[str, float]:
    """One committed step's figures. Per-criterion keys name their criterion; the track-wide ones (validation
    metric, macro averages, acceptance) carry ``.<track>`` when the run has several tracks (Single-Task)."""
    suffix = f".{record.track}" if len(manifest.tracks) > 1 else ""
    metrics: dict[str, Any] = {f"val_metric{suffix}": record.val_metric}
    if record.step > 0:
        metrics[f"accepted{suffix}"] = float(record.status == "accepted")
    for split, figures in (("val", record.val), ("test", record.test)):
        if not figures:
            continue
        for name in ("macro_rho", "macro_mae", "parsed_share"):
            metrics[f"{split}.{name}{suffix}"] = figures.get(name)
        for figure in PER_CRITERION_METRICS:
            for criterion, value in (figures.get(figure) or {}).items():
                metrics[f"{split}.{figure}.{criterion}"] = value
    metrics |= {f"instruction_tokens.{c}": n for c, n in instruction_lengths(record.prompt).items()}
    metrics |= {f"tokens.{role}": u["prompt_tokens"] + u["completion_tokens"] for role, u in usage.items()}
    cost = spend_by_role(manifest.models, usage)
    if cost:
        metrics["cost"] = sum(cost.values())
    return {_key(k): v for k, v in _finite(metrics).items()}


def summary_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    """The run's closing figures from its summary."""
    metrics: dict[str, Any] = {"hvi": summary.get("hvi")}
    for point in ("initial", "best", "best_oracle"):
        chosen = summary.get(point)
        if chosen:
            metrics[f"{point}.macro_rho"] = chosen["macro_rho"]
            metrics[f"{point}.step"] = chosen["step"]
            metrics |= {f"{point}.rho.{c}": v for c, v in (chosen.get("rho") or {}).items()}
    delta = summary.get("delta_macro_rho")
    if delta:
        metrics["delta_macro_rho"] = delta["value"]
    metrics |= {f"llm_calls.{role}": n for role, n in summary.get("llm_calls", {}).items()}
    for role, tokens in summary.get("tokens", {}).items():
        metrics |= {f"tokens.{role}.{kind}": n for kind, n in tokens.items()}
    if summary.get("cost"):
        metrics["cost.total"] = summary["cost"]["total"]
    return {_key(k): v for k, v in _finite(metrics).items()}


class MlflowTracker:
    """The MLflow runs of one invocation (a run, or an experiment's parent and cells), fed by one background
    thread in the order things happened. Close it to wait for everything to be sent."""

    def __init__(self, settings: MlflowSettings) -> None:
        self.settings = settings
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlflow")
        self._client: Any = None
        self._failed = False

    def send(self, job: Callable[[], Any]) -> Future[Any]:
        def guarded() -> Any:
            if self._failed:
                return None
            try:
                return job()
            except Exception as exc:  # tracking must never stop a run (an ImportError too)
                self._failed = True
                log.warning("mlflow.failed", error=redact(f"{type(exc).__name__}: {exc}"[:300]), tracking="off")
                return None

        return self._pool.submit(guarded)

    def client(self) -> Any:
        if self._client is None:
            from mlflow import MlflowClient

            uri = self.settings.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None
            self._client = MlflowClient(tracking_uri=uri)
        return self._client

    def run(self, directory: Path, name: str, parent: TrackedRun | None = None) -> TrackedRun:
        """The MLflow run of a run or experiment directory: the one ``mlflow.json`` there names, else a new one
        (a child of ``parent``'s)."""

        def create() -> tuple[str, bool] | None:
            client = self.client()
            found = recorded(directory)
            if found is not None:
                return found[1], False
            experiment = client.get_experiment_by_name(self.settings.experiment)
            experiment_id = (
                experiment.experiment_id if experiment else client.create_experiment(self.settings.experiment)
            )
            parent_id = parent.run_id.result() if parent else None
            tags = {"mlflow.parentRunId": parent_id[0]} if parent_id else {}
            run_id: str = client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
            # An http store's user:password@ is not kept (MLflow reads MLFLOW_TRACKING_USERNAME/PASSWORD too).
            uri = self.settings.tracking_uri
            kept = self.settings.model_copy(update={"tracking_uri": uri and strip_url_credentials(uri)})
            record = {"settings": kept.model_dump(mode="json"), "run_id": run_id}
            write_private_text(directory / TRACKING_FILE, json.dumps(record, indent=2) + "\n")
            return run_id, True

        return TrackedRun(self, self.send(create))

    @property
    def failed(self) -> bool:
        """Whether tracking stopped on a failure (warned once)."""
        return self._failed

    def close(self) -> None:
        """Wait until everything queued is sent (or given up)."""
        self._pool.shutdown(wait=True)


class TrackedRun:
    """One MLflow run; every method returns at once (the work is queued)."""

    def __init__(self, tracker: MlflowTracker, run_id: Future[tuple[str, bool] | None]) -> None:
        self._tracker = tracker
        self.run_id = run_id
        """The MLflow run id and whether it was created now (not found in ``mlflow.json``); ``None`` on failure."""

    def _on_run(self, job: Callable[[Any, str], None], *, new_only: bool = False) -> None:
        def with_run() -> None:
            found = self.run_id.result()
            if found is not None and (found[1] or not new_only):
                job(self._tracker.client(), found[0])

        self._tracker.send(with_run)

    def child(self, directory: Path, name: str) -> TrackedRun:
        """The MLflow run of ``directory`` (a cell of this experiment), nested under this one."""
        return self._tracker.run(directory, name, parent=self)

    def params(self, params: Mapping[str, str]) -> None:
        """Log params once, when the MLflow run is new (MLflow refuses a param changed on a resumed run)."""
        items = list(params.items())

        def log_params(client: Any, run_id: str) -> None:
            from mlflow.entities import Param

            for start in range(0, len(items), _BATCH):
                chunk = items[start : start + _BATCH]
                client.log_batch(run_id, params=[Param(k, v) for k, v in chunk])

        self._on_run(log_params, new_only=True)

    def metrics(self, values: Mapping[str, float], step: int) -> None:
        items = dict(values)

        def log_metrics(client: Any, run_id: str) -> None:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            metrics = [Metric(k, v, now, step) for k, v in items.items()]
            for start in range(0, len(metrics), _BATCH * 10):
                client.log_batch(run_id, metrics=metrics[start : start + _BATCH * 10])

        self._on_run(log_metrics)

    def text(self, text: str, artifact: str) -> None:
        self._on_run(lambda client, run_id: client.log_text(run_id, text, artifact))

    def files(self, paths: Iterable[Path], folder: str | None = None) -> None:
        existing = [p for p in paths if p.is_file()]

        def log_files(client: Any, run_id: str) -> None:
            for path in existing:
                client.log_artifact(run_id, str(path), folder)

        self._on_run(log_files)

    def end(self, status: str) -> None:
        """Mark the MLflow run ``FINISHED`` or ``FAILED``."""
        self._on_run(lambda client, run_id: client.set_terminated(run_id, status))


class RunTracking:
    """Feeds one judgeopt run's MLflow run: its params at the start, each committed step, its summary at the end."""

    def __init__(self, tracked: TrackedRun, store: RunStore) -> None:
        self.tracked = tracked
        self.store = store
        self.manifest = store.manifest()
        tracked.params(run_params(self.manifest))

    def step(self, track: str, step: int) -> None:
        """Called when ``track`` committed ``step`` (on the event loop: reads only, the sending is queued)."""
        record = next(r for r in self.store.steps(track) if r.step == step)
        self.tracked.metrics(step_metrics(record, self.manifest, self.store.usage_by_role()), step)
        name = f"step_{step:03d}.txt" if len(self.manifest.tracks) == 1 else f"{track}/step_{step:03d}.txt"
        self.tracked.text(prompt_text(record.prompt), f"prompts/{name}")

    def finished(self, summary: Mapping[str, Any], run_dir: Path) -> None:
        last = max((s["step"] for s in summary.get("steps", [])), default=0)
        self.tracked.metrics(summary_metrics(summary), last)
        self.tracked.files([run_dir / "summary.json"])
        self.tracked.end("FAILED" if summary.get("status") == "failed" else "FINISHED")


@contextlib.contextmanager
def run_tracking(settings: MlflowSettings | None, store: RunStore, run_dir: Path) -> Iterator[RunTracking | None]:
    """The run's MLflow tracking for the block (``None`` without ``settings``): its MLflow run is marked failed if the
    block raises, and everything queued is sent before the block is left."""
    if settings is None:
        yield None
        return
    tracker = MlflowTracker(settings)
    tracking = RunTracking(tracker.run(run_dir, run_dir.name), store)
    try:
        yield tracking
    except BaseException:
        tracking.tracked.end("FAILED")
        raise
    finally:
        tracker.close()
