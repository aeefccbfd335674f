"""Command-line conventions: help for every option with its default, root logging flags, the config file's published
JSON Schema, and a versioned summary.json."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
import structlog
import yaml

from judgeopt.cli import build_parser, main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _commands(parser: argparse.ArgumentParser, path: str = "judgeopt") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, f"{path} {name}")


def _options() -> list[tuple[str, argparse.ArgumentParser, argparse.Action]]:
    return [
        (path, parser, action)
        for path, parser in _commands(build_parser())
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction | argparse._HelpAction)
    ]


class TestHelp:
    def test_help_imports_no_heavy_library(self) -> None:
        """`judgeopt --help` builds every command's parser without importing logging, validation, gRPC or the LLM
        stack (each costs tens to hundreds of milliseconds; help should come back at once)."""
        heavy = ("structlog", "pydantic", "grpc", "openai", "autogen_core", "rich", "yaml", "numpy", "scipy")
        probe = (
            "import sys; from judgeopt.cli import build_parser; build_parser().format_help(); "
            "print(sorted(name for name in sys.modules if name.split('.')[0] in sys.argv[1:]))"
        )
        done = subprocess.run([sys.executable, "-c", probe, *heavy], capture_output=True, text=True, check=True)
        assert done.stdout.strip() == "[]", done.stdout

    def test_every_option_of_every_command_has_help(self) -> None:
        options = _options()
        assert len({path for path, _, _ in options}) >= 12  # the root and every command
        assert len(options) > 100
        missing = [f"{path} {action.option_strings or action.dest}" for path, _, action in options if not action.help]
        assert missing == []

    def test_every_argparse_default_is_shown(self) -> None:
        """An option with a default of its own shows it in its help; one left unset defers to the config file."""
        shown = 0
        for path, parser, action in _options():
            if not action.option_strings or action.default in (None, False, argparse.SUPPRESS):
                continue
            help_text = " ".join(parser.format_help().split())
            assert f"default: {action.default}" in help_text or "default" in (action.help or ""), (path, action)
            shown += 1
        assert shown >= 2
        export = dict(_commands(build_parser()))["judgeopt export"]
        assert "(default: best)" in " ".join(export.format_help().split())


class TestLogging:
    @pytest.mark.parametrize("fmt", ["json", "console"])
    def test_root_flags_configure_the_format_and_level(self, fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
        """After the flags, an info event is written to stderr in the asked format, and a debug one is not."""
        assert main(["--log-format", fmt, "--log-level", "info", "config", "schema"]) == 0
        capsys.readouterr()
        structlog.get_logger("probe").info("probe.info", answer=42)
        structlog.get_logger("probe").debug("probe.debug")
        captured = capsys.readouterr()
        assert captured.out == ""
        lines = captured.err.splitlines()
        assert len(lines) == 1
        if fmt == "json":
            assert json.loads(lines[0])["event"] == "probe.info"
        else:
            assert "probe.info" in lines[0]
            assert not lines[0].startswith("{")

    def test_a_bad_level_is_a_usage_error(self, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit) as exited:
            main(["--log-level", "loud", "config", "schema"])
        assert exited.value.code == 2
        assert "--log-level" in capsys.readouterr().err


@pytest.fixture(scope="module")
def schema() -> dict[str, object]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["config", "schema"]) == 0
    loaded: dict[str, object] = json.loads(out.getvalue())
    return loaded


class TestConfigSchema:
    def test_names_every_section_and_documents_settings(self, schema: dict[str, object]) -> None:
        assert set(schema["properties"]) == {"run", "grid", "models", "service", "tracking"}  # type: ignore[call-overload]
        mlflow = schema["$defs"]["MlflowSettings"]["properties"]  # type: ignore[index]
        assert mlflow["experiment"]["default"] == "judgeopt" and mlflow["tracking_uri"]["description"]
        run = schema["$defs"]["RunConfig"]["properties"]  # type: ignore[index]
        assert run["steps"]["default"] == 12
        documented = [name for name, field in run.items() if field.get("description")]
        assert len(documented) >= 5

    @pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
    def test_the_examples_validate_and_a_typo_does_not(self, schema: dict[str, object], example: str) -> None:
        config = yaml.safe_load((EXAMPLES / example).read_text())
        jsonschema.validate(config, schema)
        config.setdefault("run", {})["stpes"] = 3
        with pytest.raises(jsonschema.ValidationError, match="stpes"):
            jsonschema.validate(config, schema)
