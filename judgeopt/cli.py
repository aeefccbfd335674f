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
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from judgeopt.core.log_defaults import LogDefaults

COMMANDS: dict[str, str] = {
    "optimize": "judgeopt.orchestrator.cli.optimize",
    "resume": "judgeopt.orchestrator.cli.resume",
    "experiment": "judgeopt.orchestrator.cli.experiment",
    "report": "judgeopt.orchestrator.cli.report",
    "export": "judgeopt.orchestrator.cli.export",
    "judge": "judgeopt.orchestrator.cli.judge",
    "audit": "judgeopt.orchestrator.cli.audit",
    "focus-agreement": "judgeopt.orchestrator.cli.focus_agreement",
    "interference": "judgeopt.orchestrator.cli.interference",
    "serve": "judgeopt.services.command",
    "healthcheck": "judgeopt.services.healthcheck",
    "local-llm": "judgeopt.orchestrator.cli.local_llm",
    "config": "judgeopt.orchestrator.cli.config",
    "init": "judgeopt.orchestrator.cli.init",
}
"""Subcommand → its module (``HELP``, ``add_arguments(parser)``, ``run(args) -> int``, optionally ``LOG_DEFAULTS`` and
``trace_service_name(args) -> str``)."""

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


class _DefaultsHelpFormatter(argparse.HelpFormatter):
    """Every flag's help ends with its default, unless it already states one or has none (a flag left unset defers
    to the config file, whose defaults its help names)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help
        if text is None or "default" in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        if not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    from judgeopt.core.log_defaults import LOG_FORMATS, LOG_LEVELS

    parser = argparse.ArgumentParser(
        prog="judgeopt", description="Optimize multi-criterion LLM judges.", formatter_class=_DefaultsHelpFormatter
    )
    parser.add_argument("--version", action=_VersionAction)
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        help="log lines as readable console text or as one JSON object each (default: console on stderr; json on "
        "stdout for serve)",
    )
    parser.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        help="the least severe events logged (default: warning; info for serve, audit and local-llm)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        sub = commands.add_parser(
            name, help=module.HELP, description=module.HELP, formatter_class=_DefaultsHelpFormatter
        )
        module.add_arguments(sub)
        sub.set_defaults(command_module=module)
    completion = commands.add_parser("completion", help="print a shell completion script (bash, zsh or tcsh)")
    completion.add_argument("shell", choices=["bash", "zsh", "tcsh"], help="the shell the script is for")
    completion.set_defaults(command_module=None)
    return parser


def _completion(parser: argparse.ArgumentParser, shell: str) -> int:
    import shtab

    print(shtab.complete(parser, shell=shell))
    return 0


def _configure_logging(args: argparse.Namespace, defaults: LogDefaults | None) -> None:
    import logging

    from judgeopt.core.log_defaults import LogDefaults
    from judgeopt.core.log_setup import configure_logging

    defaults = defaults or LogDefaults()
    configure_logging(
        json=(args.log_format or defaults.format) == "json",
        level=logging.getLevelNamesMapping()[(args.log_level or defaults.level).upper()],
        stream=sys.stdout if defaults.stdout else sys.stderr,
    )


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM (e.g. a pod being stopped) unwinds like Ctrl-C, so started services and the local model stop."""
    del signum, frame
    raise KeyboardInterrupt


def _orchestrator_service_name(args: argparse.Namespace) -> str:
    """What a command's spans are exported as when ``OTEL_SERVICE_NAME`` is unset (``serve`` names its role)."""
    del args
    return "judgeopt"


def main(argv: Sequence[str] | None = None) -> int:
    from judgeopt.core.errors import ConfigError, JudgeoptError

    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as typed, for commands that suggest a next one
    module: ModuleType | None = args.command_module
    if module is None:
        return _completion(parser, args.shell)
    _configure_logging(args, getattr(module, "LOG_DEFAULTS", None))
    handles_sigterm = getattr(module, "HANDLES_SIGTERM", False)
    if not handles_sigterm and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        from judgeopt.core.tracing import tracing

        with tracing(getattr(module, "trace_service_name", _orchestrator_service_name)(args)):
            code: int = module.run(args)
        return code
    except JudgeoptError as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_FAILURE
    except KeyboardInterrupt:
        import structlog

        structlog.get_logger().warning("interrupted")
        return 130
