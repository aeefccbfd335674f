"""A checkout alone, with no data folder beside it and an empty user cache, runs `judgeopt optimize`: the data comes
from its pinned origins (served over loopback here) and the models from the scripted endpoint. The same run checks
the final screen: the tables, then the run's warnings one line per kind (none between or before the tables), then
what the run shows and where it is."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.fake_openai import FakeOpenAI
from helpers.runs import write_config
from helpers.scripts import agent_roles_handler
from helpers.upstream import lay_out_upstream, serving

from judgeopt.orchestrator.data import sources
from judgeopt.orchestrator.data.loading import WGC_FILES
from judgeopt.orchestrator.data.locating import locate_data_file
from judgeopt.orchestrator.engine.summary import SUMMARY_SCHEMA_VERSION

REPOSITORY = Path(__file__).resolve().parents[2]
TABLE_BOTTOM = "└"  # rich's default box draws each table's last line with it
SUMMEVAL_SHA256 = "b4f52322882d9c4567a5f8ed59e965646548bdf1313f1564609e69e42227bf79"


def _copy_checkout(target: Path) -> Path:
    """The repository's files (tracked, or new and not ignored) as they are in the working tree, symlinks kept: what a
    clone of it holds once committed."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPOSITORY,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for name in filter(None, (entry.decode() for entry in listed)):
        source, copy = REPOSITORY / name, target / name
        copy.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            copy.symlink_to(source.readlink())
        elif source.is_file():
            shutil.copy2(source, copy)
    return target


@pytest.fixture(scope="module")
def bare_clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _copy_checkout(tmp_path_factory.mktemp("bare") / "judgeopt")


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The origins on loopback: (base URL, sha256 of the served pickle, which is rebuilt, not the published one)."""
    root = tmp_path_factory.mktemp("upstream")
    shared_files = {name: locate_data_file(name) for name in ("summeval.jsonl", *WGC_FILES)}
    published = lay_out_upstream(root, shared_files)
    with serving(root) as server:
        yield server.url, published["summeval.jsonl"]


def test_a_bare_clone_runs_optimize_with_the_data_fetched_once(
    bare_clone: Path, upstream: tuple[str, str], tmp_path: Path
) -> None:
    """The run completes, judgeopt is imported from the clone (whose ../shared/data does not exist), the cache then
    holds summeval.jsonl with its pinned sha256, and the screen ends as it should."""
    base_url, pickle_sha256 = upstream
    assert not (bare_clone.parent / "shared").exists()
    # The rebuilt pickle's sha256 is pinned in the clone's copy, as the published one is in the repository.
    sources_file = bare_clone / "orchestrator" / "data" / "sources.py"
    pinned = sources.PINNED["summeval.jsonl"].published_sha256
    sources_file.write_text(sources_file.read_text().replace(pinned, pickle_sha256))
    env = {key: value for key, value in os.environ.items() if not key.startswith("JUDGEOPT_")}
    env |= {
        "PYTHONPATH": str(bare_clone),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "JUDGEOPT_SOURCES_URL": base_url,
        "COLUMNS": "200",  # no path folded across lines
    }
    where = subprocess.run(
        [sys.executable, "-c", "import judgeopt.orchestrator.data.locating as m; print(m.checkout_data_dir())"],
        cwd=bare_clone,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert where == str(bare_clone.parent / "shared" / "data")
    with FakeOpenAI(agent_roles_handler()) as scripted:  # a judge of one constant score: warnings to show
        config = write_config(tmp_path / "run.yaml", scripted.base_url, steps=1)
        done = subprocess.run(
            [sys.executable, "-m", "judgeopt", "optimize", "--config", str(config), "--run-dir", str(tmp_path / "run")],
            cwd=bare_clone,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "complete"
    assert next(iter(summary)) == "schema_version" and summary["schema_version"] == SUMMARY_SCHEMA_VERSION
    assert len(summary["steps"]) == 2
    cached = tmp_path / "cache" / "judgeopt" / "summeval.jsonl"
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == SUMMEVAL_SHA256
    _assert_final_screen(done.stdout, done.stderr, tmp_path / "run")


def _assert_final_screen(out: str, err: str, run_dir: Path) -> None:
    """Constant-prediction warnings held during the run and shown once, counted, after the last table; then what the
    run shows and where it is."""
    assert "constant_predictions" not in err  # held, not written while the bars were drawn
    lines = out.splitlines()
    table_ends = [i for i, line in enumerate(lines) if line.startswith(TABLE_BOTTOM)]
    warnings = [i for i, line in enumerate(lines) if line.startswith("warning ")]
    shows = [i for i, line in enumerate(lines) if line.startswith("What this run shows:")]
    assert len(table_ends) >= 2 and len(shows) == 1
    assert [lines[i].split(" ×")[0] for i in warnings] == ["warning metrics.constant_predictions"]
    assert int(lines[warnings[0]].split("×")[1].split()[0]) >= 2  # counted, not repeated
    assert table_ends[-1] < warnings[0] < shows[0]
    closing = " ".join(" ".join(lines[shows[0] :]).split())
    assert "macro Spearman ρ went from" in closing and "constant score for" in closing
    assert f"The run is in {run_dir}" in closing and f"judgeopt report {run_dir}" in closing
    assert "capable" not in closing  # the run was on an endpoint already
