"""The generated contract stays in step with the .proto files; the distribution installs one import name,
``judgeopt``, whose layers import each other only one way."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


class TestGeneratedStubs:
    def test_committed_stubs_match_a_fresh_generation(self) -> None:
        """Regenerating the stubs into a temp dir gives byte-identical files (no hand edits, no stale stubs)."""
        result = subprocess.run(
            [sys.executable, str(REPO_ROOT / "protos" / "generate.py"), "--check"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr

    def test_check_fails_on_drift(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """The drift check is not vacuous: a stub that differs from generation is reported."""
        spec = importlib.util.spec_from_file_location("generate", REPO_ROOT / "protos" / "generate.py")
        assert spec is not None and spec.loader is not None
        generate = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(generate)
        copy = tmp_path / "judgeopt" / "v1"
        copy.mkdir(parents=True)
        for proto in (REPO_ROOT / "protos" / "judgeopt" / "v1").glob("*"):
            if proto.is_file():
                (copy / proto.name).write_bytes(proto.read_bytes())
        (copy / "judge_pb2.py").write_text("# edited by hand\n")
        monkeypatch.setattr(generate, "PROTO_ROOT", tmp_path)
        monkeypatch.setattr(generate, "PACKAGE_DIR", copy)
        monkeypatch.setattr(sys, "argv", ["generate.py", "--check"])
        assert generate.main() == 1


LINKED_FOLDERS = {
    "agents": "agents",
    "services": "services",
    "orchestrator": "orchestrator",
    "v1": "protos/judgeopt/v1",
}
"""judgeopt/<name> -> the specified top-level folder it stands for."""


SOURCE_ITEMS = ("agents", "services", "orchestrator", "protos", "judgeopt", "pyproject.toml", "README.md")


def copy_source(target: Path) -> Path:
    """The package's sources (links kept), so that building or linting them writes nothing into the checkout."""
    for name in SOURCE_ITEMS:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, target / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, target / name)
    return target


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    source = copy_source(tmp_path_factory.mktemp("source"))
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (path,) = out.glob("judgeopt-*.whl")
    return zipfile.ZipFile(path)


class TestDistribution:
    def test_the_wheel_installs_one_top_level_name(self, wheel: zipfile.ZipFile) -> None:
        """Nothing but ``judgeopt`` (and its metadata) lands at the top of site-packages."""
        names = {name.split("/")[0] for name in wheel.namelist()}
        packages = {n for n in names if not n.endswith(".dist-info")}
        assert packages == {"judgeopt"}, packages

    @pytest.mark.parametrize("name", sorted(LINKED_FOLDERS))
    def test_every_module_of_the_linked_folders_is_in_the_wheel(self, wheel: zipfile.ZipFile, name: str) -> None:
        """Each folder's Python files (and prompts, .proto files) ship under ``judgeopt/<name>/``."""
        folder = REPO_ROOT / LINKED_FOLDERS[name]
        expected = {
            f"judgeopt/{name}/{p.relative_to(folder).as_posix()}"
            for p in folder.rglob("*")
            if p.suffix in (".py", ".txt", ".proto", ".pyi") and "__pycache__" not in p.parts
        }
        assert len(expected) >= 5
        missing = expected - set(wheel.namelist())
        assert not missing, sorted(missing)

    def test_every_module_imports_outside_the_checkout(self, tmp_path: Path) -> None:
        """From another working directory (where ``agents`` & co. are not importable as top-level names) every
        module imports and every prompt template loads: nothing refers to the folders by their own names."""
        script = (
            "import importlib, pkgutil, judgeopt\n"
            "names = [m.name for m in pkgutil.walk_packages(judgeopt.__path__, 'judgeopt.')]\n"
            "for name in names:\n    if not name.endswith('__main__'): importlib.import_module(name)\n"
            "from judgeopt.agents import prompting\n"
            "from importlib import resources\n"
            "templates = [p.name[:-4] for p in resources.files('judgeopt.agents').joinpath('prompts').iterdir()]\n"
            "for t in templates: prompting.template(t)\n"
            "print(len(names), len(templates))\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120, check=False
        )
        assert result.returncode == 0, result.stderr[-3000:]
        modules, templates = map(int, result.stdout.split())
        assert modules >= 80 and templates >= 10

    def test_the_links_point_at_the_specified_folders(self) -> None:
        for name, target in LINKED_FOLDERS.items():
            link = REPO_ROOT / "judgeopt" / name
            assert link.is_symlink() and link.resolve() == (REPO_ROOT / target).resolve(), name


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--config", str(root / "pyproject.toml"), "--no-cache"],
        capture_output=True,
        text=True,
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": str(Path(sys.executable).parent)},
        timeout=120,
        check=False,
    )


class TestCommandLine:
    def test_version_and_completion(self) -> None:
        """``python -m judgeopt --version`` prints the installed version; ``completion bash`` prints a script that
        completes every subcommand."""
        from importlib.metadata import version

        run = subprocess.run(
            [sys.executable, "-m", "judgeopt", "--version"], capture_output=True, text=True, timeout=60, check=True
        )
        assert run.stdout.strip() == f"judgeopt {version('judgeopt')}"
        script = subprocess.run(
            [sys.executable, "-m", "judgeopt", "completion", "bash"], capture_output=True, text=True, timeout=60
        )
        assert script.returncode == 0
        for command in ("optimize", "resume", "experiment", "report", "export", "judge", "audit", "serve"):
            assert command in script.stdout
        assert "--gradient-endpoint" in script.stdout and "complete" in script.stdout


class TestLayering:
    def test_the_layering_contracts_hold(self) -> None:
        result = _lint_imports(REPO_ROOT)
        assert result.returncode == 0, result.stdout[-3000:]
        assert "6 kept, 0 broken" in result.stdout

    @pytest.mark.parametrize(
        ("folder", "planted", "contract"),
        [
            ("orchestrator", "from judgeopt.agents import judge", "The orchestrator reaches agents only over gRPC"),
            ("orchestrator", "import openai", "The orchestrator reaches agents only over gRPC"),
            ("agents", "from judgeopt.services import server", "Agents never import services or the orchestrator"),
            ("services", "from judgeopt.orchestrator import loop", "Services never import the orchestrator"),
            ("judgeopt/core", "from judgeopt.agents import errors", "The base layer (judgeopt.core) imports only"),
            ("judgeopt/api", "from judgeopt.services import server", "The Python API reaches agents only through"),
            ("judgeopt/api", "import autogen_agentchat", "The Python API reaches agents only through"),
        ],
    )
    def test_a_planted_violation_breaks_its_contract(
        self, tmp_path: Path, folder: str, planted: str, contract: str
    ) -> None:
        """The contracts have teeth: one forbidden import, planted in a copy of the tree, is reported."""
        copy_source(tmp_path)
        (tmp_path / folder / "planted.py").write_text(f"{planted}\n")
        result = _lint_imports(tmp_path)
        assert result.returncode != 0
        assert "1 broken" in result.stdout and contract in result.stdout.split("Broken contracts")[1]
