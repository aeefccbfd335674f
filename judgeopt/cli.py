"""The ``judgeopt`` command line: one subcommand per module, assembled here.

``serve`` and ``healthcheck`` are the services' doors (``judgeopt.services.command``, ``.healthcheck``); every other
command is the orchestrator's (``judgeopt.orchestrator.cli.*``). Command modules load only argparse at import, so
``--help`` is fast; each command imports what it needs when it runs. Every judgeopt error is mapped here, once: one
``Type: message`` line on stderr, exit 2 for a configuration problem and 1 for any other failure.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
from collections.abc import Sequence
from types import ModuleType

COMMANDS: dict[str, str] = {
    "optimize": "judgeopt.orchestrator.cli.optimize",
    "resume": "judgeopt.orchestrator.cli.resume",
    "experiment": "judgeopt.orchestrator.cli.experiment",
    "report": "judgeopt.orchestrator.cli.report",
    "export": "judgeopt.orchestrator.cli.export",
    "judge": "judgeopt.orchestrator.cli.judge",
    "audit": "judgeopt.orchestrator.cli.audit",
    "focus-agreement": "judgeopt.orchestrator.cli.focus_agreement",
    "serve": "judgeopt.services.command",
    "healthcheck": "judgeopt.services.healthcheck",
    "local-llm": "judgeopt.orchestrator.cli.local_llm",
}
"""Subcommand → its module (``HELP``, ``add_arguments(parser)``, ``run(args) -> int``)."""

EXIT_FAILURE = 1
EXIT_USAGE = 2


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("judgeopt")
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "unknown"


class _VersionAction(argparse.Action):
    """``--version`` that reads the installed version only when asked (metadata lookups cost start-up time)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(f"judgeopt {_version()}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="judgeopt", description="Optimize multi-criterion LLM judges.")
    parser.add_argument("--version", action=_VersionAction)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        sub = commands.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(command_module=module)
    completion = commands.add_parser("completion", help="print a shell completion script (bash, zsh or tcsh)")
    completion.add_argument("shell", choices=["bash", "zsh", "tcsh"])
    completion.set_defaults(command_module=None)
    return parser


def _completion(parser: argparse.ArgumentParser, shell: str) -> int:
    import shtab

    print(shtab.complete(parser, shell=shell))
    return 0


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM (e.g. a pod being stopped) unwinds like Ctrl-C, so started services and the local model stop."""
    del signum, frame
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    from judgeopt.core.errors import ConfigError, JudgeoptError

    parser = build_parser()
    args = parser.parse_args(argv)
    module: ModuleType | None = args.command_module
    if module is None:
        return _completion(parser, args.shell)
    handles_sigterm = getattr(module, "HANDLES_SIGTERM", False)
    if not handles_sigterm and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        code: int = module.run(args)
        return code
    except JudgeoptError as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_FAILURE
    except KeyboardInterrupt:
        import structlog

        structlog.get_logger().warning("interrupted")
        return 130
