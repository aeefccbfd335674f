"""judgeopt: multi-criterion LLM-judge prompt optimization with textual gradients, as gRPC agent services.

The Python API (``judgeopt.api``) is loaded on first use of one of its names, so ``import judgeopt`` stays cheap
and the command line starts fast::

    import judgeopt

    run = judgeopt.optimize("judgeopt.yaml", run_dir="runs/demo")  # or a mapping with models: and run:
    for step in run.steps():
        print(step.step, step.accepted, step.macro_rho)
    judge = run.judge("best")  # or judgeopt.load_judge("judge.yaml"), a file `judgeopt export` wrote
    print(judge.score([{"article": "...", "summary": "..."}]))  # one {criterion: score} per row

Every error is a :class:`JudgeoptError`; each layer hangs its own branch under the root, and the command line maps
the root in one place (``judgeopt.cli``: one ``Type: message`` line, exit 2 for a ``ConfigError``, else 1)::

    JudgeoptError                         judgeopt.core.errors
    ├── ConfigError                       a config file, flag or setting is invalid
    │   ├── ModelConfigError              a role's model settings cannot be used
    │   ├── CredentialError               a TLS file or the token variable cannot be used
    │   └── PolicyError                   a policy is invalid (names the stage)       judgeopt.orchestrator.errors
    ├── LocalModelError                   the embedded model server did not start
    ├── DirectoryInUse                    another process writes to the directory (names its pid)
    ├── AgentError                        raised inside an agent                      judgeopt.agents.errors
    │   ├── InvalidRequestError           the request is malformed
    │   └── ModelEndpointError            the model endpoint failed (timeout, unavailable, refused)
    ├── DataError                         a dataset is missing or malformed           judgeopt.orchestrator.errors
    ├── ServiceStartError                 an agent service did not come up
    ├── RunFailed                         a run cannot go on
    ├── AgentCallError                    an agent RPC failed (timeout, unavailable, rejected)
    └── StorageError, MissingDependencyError                                          judgeopt.api
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (a few ms of every command's start-up)
if TYPE_CHECKING:
    from judgeopt.api import (
        ConfigError,
        DataError,
        Judge,
        JudgeoptError,
        MissingDependencyError,
        Prediction,
        Run,
        RunFailed,
        ServiceStartError,
        Step,
        StorageError,
        load_judge,
        open_run,
        optimize,
        optimize_async,
    )

__all__ = [
    "ConfigError",
    "DataError",
    "Judge",
    "JudgeoptError",
    "MissingDependencyError",
    "Prediction",
    "Run",
    "RunFailed",
    "ServiceStartError",
    "Step",
    "StorageError",
    "load_judge",
    "open_run",
    "optimize",
    "optimize_async",
]


def __getattr__(name: str) -> object:
    """Load the API's names on first access (PEP 562)."""
    if name not in __all__:
        raise AttributeError(f"module 'judgeopt' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module("judgeopt.api"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
