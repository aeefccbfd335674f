"""``--local-model`` naming a GGUF file on the Hugging Face Hub: parsed, downloaded once into the cache from a
loopback stand-in for the Hub (serving the embedded model's file), verified by sha256, and handed to the local model
server as a path. llama.cpp is never started here."""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import huggingface_hub.constants
import pytest

from judgeopt.core.errors import LocalModelError
from judgeopt.core.hub_model import HubModel, file_sha256, parse_local_model, resolve_local_model
from judgeopt.core.local_model import LocalModelServer, default_model_path
from tests.helpers.fake_hub import FakeHub, HubFile, serving

REPO = "judgeopt-test/SmolLM2-135M-Instruct-GGUF"
FILE = "smollm2-135m-instruct-q4_1.gguf"


@functools.cache
def real_sha256() -> str:
    """The embedded model file's sha256 (hashed once, when a test needs it, not at collection)."""
    return file_sha256(default_model_path())


def hub_files(sha256: str | None = None) -> dict[str, HubFile]:
    gguf = default_model_path()
    sha256 = sha256 or real_sha256()
    return {
        FILE: HubFile(gguf, sha256),
        "smollm2-135m-instruct-q8_0.gguf": HubFile(gguf, sha256),
        "smollm2-135m-instruct-q8_0-00001-of-00002.gguf": HubFile(gguf, sha256),
    }


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache for the test (``huggingface_hub`` reads its settings once, at import)."""
    folder = tmp_path / "hf-cache"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(folder))
    return folder


def point_at(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    """What ``HF_ENDPOINT`` does, for a ``huggingface_hub`` already imported."""
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.url)
    template = hub.url + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)


@pytest.fixture
def hub(cache: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    with serving(FakeHub(REPO, hub_files())) as served:
        point_at(served, monkeypatch)
        yield served


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"{REPO}:q4_k_m", HubModel(REPO, tag="q4_k_m")),
        (f"{REPO}:{FILE}", HubModel(REPO, filename=FILE)),
        (f"hf://{REPO}/sub/{FILE}", HubModel(REPO, filename=f"sub/{FILE}")),
        (f"{REPO}@v1.0:{FILE}#sha256={'A' * 64}", HubModel(REPO, filename=FILE, revision="v1.0", sha256="a" * 64)),
        ("models/model.gguf", Path("models/model.gguf")),
        ("./a:b.gguf", Path("./a:b.gguf")),
    ],
)
def test_local_model_forms(text: str, expected: object) -> None:
    assert parse_local_model(text) == expected


@pytest.mark.parametrize("text", ["hf://no-file", f"{REPO}:{FILE}#md5=abc", f"{REPO}:{FILE}#sha256=abc"])
def test_a_malformed_reference_is_a_one_line_usage_error(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    from judgeopt.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["local-llm", "--local-model", text])
    assert stop.value.code == 2
    assert "argument --local-model" in capsys.readouterr().err.strip().splitlines()[-1]
    with pytest.raises(argparse.ArgumentTypeError):
        parse_local_model(text)


def test_a_tag_is_downloaded_once_verified_and_given_to_the_server_from_the_cache(hub: FakeHub, cache: Path) -> None:
    server = LocalModelServer(parse_local_model(f"{REPO}:Q4_1"))  # not started: only its model is resolved
    assert server.model_path.is_relative_to(cache) and server.model_path.name == FILE
    sha256 = real_sha256()
    assert file_sha256(server.model_path) == sha256
    downloads = [r for r in hub.requests if r.startswith("GET") and "/resolve/" in r]
    assert len(downloads) == 1 and any("/tree/" in r for r in hub.requests)

    hub.requests.clear()
    for text in (f"{REPO}:q4_1", f"{REPO}:{FILE}", f"hf://{REPO}/{FILE}#sha256={sha256}"):
        assert LocalModelServer(parse_local_model(text)).model_path == server.model_path
    with pytest.raises(LocalModelError, match=f"the cached file's sha256 is {sha256}, not {'e' * 64}"):
        resolve_local_model(parse_local_model(f"{REPO}:{FILE}#sha256={'e' * 64}"))
    assert hub.requests == []


def test_a_file_whose_hash_is_not_the_hubs_is_refused_and_removed(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with serving(FakeHub(REPO, hub_files(sha256="0" * 64))) as lying:
        point_at(lying, monkeypatch)
        with pytest.raises(LocalModelError, match=r"is not the Hub's 0{64}; it was removed") as error:
            resolve_local_model(parse_local_model(f"{REPO}:{FILE}"))
    assert "\n" not in str(error.value)
    assert not [p for p in cache.rglob("*") if p.is_file() and p.stat().st_size > 1000]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("missing.gguf", "no such file in the repository"),
        ("q2_k", "tag 'q2_k' matches none of the .gguf files in the repository"),
    ],
)
def test_a_file_the_repository_does_not_have_is_named(hub: FakeHub, name: str, message: str) -> None:
    with pytest.raises(LocalModelError, match=message):
        resolve_local_model(parse_local_model(f"{REPO}:{name}"))


def test_without_the_hub_extra_the_error_names_it(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(LocalModelError, match=r"needs the hub extra: pip install 'judgeopt\[hub\]'"):
        resolve_local_model(parse_local_model(f"{REPO}:{FILE}"))


def test_the_command_line_reads_hf_endpoint_and_fails_a_given_sha256_on_one_line(tmp_path: Path) -> None:
    with serving(FakeHub(REPO, hub_files())) as served:
        env = {**os.environ, "HF_ENDPOINT": served.url, "HF_HUB_CACHE": str(tmp_path / "hf-cache")}
        done = subprocess.run(
            [sys.executable, "-m", "judgeopt", "local-llm", "--local-model", f"{REPO}:{FILE}#sha256={'f' * 64}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("LocalModelError: --local-model ")
    assert "is not the given" in done.stderr
    assert any(r.startswith("GET") and "/resolve/" in r for r in served.requests)


def test_the_python_api_takes_the_same_references() -> None:
    from judgeopt.api._common import as_local_model
    from judgeopt.core.errors import ConfigError

    assert as_local_model(f"{REPO}:q4_1") == HubModel(REPO, tag="q4_1")
    assert as_local_model(Path(f"{REPO}:q4_1")) == Path(f"{REPO}:q4_1")  # a Path is a path
    with pytest.raises(ConfigError, match="local_model: 'hf://x' is not a Hub reference"):
        as_local_model("hf://x")
