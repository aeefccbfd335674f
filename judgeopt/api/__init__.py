"""judgeopt's Python API, for notebooks and scripts (``import judgeopt`` gives the same names, loaded on first use).

- :func:`optimize` / :func:`optimize_async` run an optimization from a config (a mapping or a file) → :class:`Run`.
- :func:`open_run` reads a run directory: ``summary``, ``status``, ``steps()``, ``prompts()``, ``prompt(step)``,
  ``predictions(split, step)``, ``judge(step)``, and pandas frames of the steps and predictions (pandas optional).
- :func:`load_judge` reads a file written by ``judgeopt export`` → :class:`Judge`, whose ``score(rows)`` /
  ``score_async(rows)`` judge rows of text held in memory.

Every coroutine has a synchronous twin that also works inside a running event loop. Everything raised is a
:class:`JudgeoptError`. The agents are reached only over gRPC, through the services a call starts or is given.
"""

from judgeopt.api._common import MissingDependencyError, StorageError
from judgeopt.api.judges import Judge, Scores, load_judge
from judgeopt.api.optimizing import ConfigSource, optimize, optimize_async
from judgeopt.api.runs import Prediction, Run, Split, Step, StepRef, open_run
from judgeopt.core.errors import ConfigError, JudgeoptError
from judgeopt.orchestrator.errors import DataError, RunFailed, ServiceStartError

__all__ = [
    "ConfigError",
    "ConfigSource",
    "DataError",
    "Judge",
    "JudgeoptError",
    "MissingDependencyError",
    "Prediction",
    "Run",
    "RunFailed",
    "Scores",
    "ServiceStartError",
    "Split",
    "Step",
    "StepRef",
    "StorageError",
    "load_judge",
    "open_run",
    "optimize",
    "optimize_async",
]
