"""A local model named on the Hugging Face Hub: ``--local-model`` takes a GGUF path or a Hub reference.

Forms of a Hub reference (``REPO`` is ``owner/name``, optionally ``@REVISION``, a branch, tag or commit):

- ``REPO:FILE.gguf`` or ``hf://REPO/FILE.gguf``: that file of the repository;
- ``REPO:TAG``: the repository's one single-file GGUF whose name ends in ``-TAG`` or ``.TAG`` (case-insensitive), for
  a quantization tag such as ``q4_k_m``, found in the repository's file list;
- any of them followed by ``#sha256=HEX``: the file must have this sha256.

The file is downloaded once into the Hugging Face cache (``$HF_HUB_CACHE``, by default
``~/.cache/huggingface/hub``) by ``huggingface_hub`` with its progress bar, then hashed: it must match the sha256
the Hub gives for the LFS file (its ETag), and the one given after ``#sha256=`` if any; a file that does not is
deleted from the cache. A reference found in the cache resolves without any request to the Hub. ``huggingface_hub``
is the optional ``hub`` extra, imported only when a Hub reference is resolved.
"""

from __future__ import annotations

import argparse
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from judgeopt.core.errors import LocalModelError

if TYPE_CHECKING:
    from huggingface_hub import HfApi


def _log() -> Any:
    """The module's logger, imported on first use: the command line (`--help` included) imports this module for
    ``HUB_EXAMPLE`` and should not pay for structlog."""
    import structlog

    return structlog.get_logger(__name__)


HUB_EXAMPLE = "Qwen/Qwen2.5-1.5B-Instruct-GGUF:q4_k_m"
"""An official Qwen2.5 Instruct GGUF repository and quantization tag (the file qwen2.5-1.5b-instruct-q4_k_m.gguf)."""

_REPO = r"(?P<repo>\w[\w.-]*/\w[\w.-]*)(?:@(?P<revision>[\w./-]+))?"
_COLON_FORM = re.compile(rf"{_REPO}:(?P<file>[^#:@]+)")
_URI_FORM = re.compile(rf"hf://{_REPO}/(?P<file>[^#:@]+)")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SPLIT_SHARD = re.compile(r"-\d{5}-of-\d{5}\.gguf$", re.IGNORECASE)
_HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class HubModel:
    """A GGUF file on the Hub: ``filename`` is a file's path in the repository, or ``None`` with a ``tag``."""

    repo_id: str
    filename: str | None = None
    tag: str | None = None
    revision: str | None = None
    sha256: str | None = None

    def __str__(self) -> str:
        revision = f"@{self.revision}" if self.revision else ""
        return f"{self.repo_id}{revision}:{self.filename or self.tag}"


LocalModel = Path | HubModel
"""What ``--local-model`` names: a GGUF file on disk or on the Hub."""


def parse_local_model(text: str) -> LocalModel:
    """``--local-model``'s value: a :class:`HubModel` for a Hub reference, else a path (``argparse`` type); a file
    that exists is a path whatever its name."""
    if Path(text).exists():
        return Path(text)
    body, _, fragment = text.partition("#")
    match = _URI_FORM.fullmatch(body) or (None if body.startswith("hf://") else _COLON_FORM.fullmatch(body))
    if match is None:
        if body.startswith("hf://") or fragment:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a Hub reference: expected REPO:FILE.gguf, REPO:TAG or hf://REPO/FILE.gguf, "
                f"optionally with @REVISION after REPO and #sha256=HEX at the end (e.g. {HUB_EXAMPLE})"
            )
        return Path(text)
    sha256 = None
    if fragment:
        key, _, value = fragment.partition("=")
        if key != "sha256" or not _SHA256.fullmatch(value.lower()):
            raise argparse.ArgumentTypeError(f"{text!r}: expected #sha256= and 64 hex digits after the reference")
        sha256 = value.lower()
    name = match["file"]
    is_file = name.lower().endswith(".gguf")
    return HubModel(
        repo_id=match["repo"],
        filename=name if is_file else None,
        tag=None if is_file else name,
        revision=match["revision"],
        sha256=sha256,
    )


def resolve_local_model(model: LocalModel | None) -> Path | None:
    """The GGUF file on disk: a path as given, a Hub reference from the cache or downloaded and verified."""
    if model is None or isinstance(model, Path):
        return model
    try:
        from huggingface_hub import HfApi
        from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError
    except ImportError:
        raise LocalModelError(
            f"--local-model {model}: a Hub reference needs the hub extra: pip install 'judgeopt[hub]'"
        ) from None
    api = HfApi()
    try:
        cached = _from_cache(api, model, LocalEntryNotFoundError)
        return cached if cached is not None else _download(api, model)
    except EntryNotFoundError:
        raise LocalModelError(f"--local-model {model}: no such file in the repository") from None
    except (HfHubHTTPError, OSError, ValueError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LocalModelError(f"--local-model {model}: {detail}") from None


def _from_cache(api: HfApi, model: HubModel, not_cached: type[Exception]) -> Path | None:
    """The cached file of ``model`` (no request to the Hub), or ``None``."""
    try:
        if model.filename is not None:
            path = Path(
                api.hf_hub_download(model.repo_id, model.filename, revision=model.revision, local_files_only=True)
            )
        else:
            folder = Path(api.snapshot_download(model.repo_id, revision=model.revision, local_files_only=True))
            names = [p.relative_to(folder).as_posix() for p in folder.rglob("*.gguf")]
            path = folder / _tagged_file(model, names, searched="the cached files")
    except (not_cached, LocalModelError):
        return None
    if model.sha256 is not None and _blob_name(path) != model.sha256:
        raise LocalModelError(
            f"--local-model {model}: the cached file's sha256 is {_blob_name(path)}, not {model.sha256}"
        )
    _log().info("hub_model.cached", model=str(model), path=path.name)
    return path


def _download(api: HfApi, model: HubModel) -> Path:
    """Download ``model`` into the cache (the tag looked up in the repository's file list) and verify its hash."""
    filename = model.filename or _tagged_file(
        model, api.list_repo_files(model.repo_id, revision=model.revision), searched="the repository"
    )
    _log().info("hub_model.downloading", model=str(model), filename=filename)
    path = Path(api.hf_hub_download(model.repo_id, filename, revision=model.revision))
    hub_sha256 = _blob_name(path)  # the cache names a blob by the Hub's ETag: the LFS file's sha256
    actual = file_sha256(path)
    for expected, whose in ((hub_sha256, "the Hub's"), (model.sha256, "the given")):
        if expected is not None and actual != expected:
            _evict(path)
            raise LocalModelError(
                f"--local-model {model}: the downloaded file's sha256 {actual} is not {whose} {expected}; "
                "it was removed from the cache"
            )
    _log().info("hub_model.verified", model=str(model), sha256=actual)
    return path


def _tagged_file(model: HubModel, names: list[str], *, searched: str) -> str:
    """The one single-file GGUF among ``names`` whose name ends in ``-TAG`` or ``.TAG``."""
    tag = (model.tag or "").lower()
    matches = [
        name
        for name in names
        if name.lower().endswith((f"-{tag}.gguf", f".{tag}.gguf", f"_{tag}.gguf")) and not _SPLIT_SHARD.search(name)
    ]
    if len(matches) != 1:
        found = "none" if not matches else ", ".join(sorted(matches))
        raise LocalModelError(
            f"--local-model {model}: tag {model.tag!r} matches {found} of the .gguf files in {searched}"
            + ("" if matches else "; name the file (REPO:FILE.gguf)")
        )
    return matches[0]


def _blob_name(path: Path) -> str | None:
    """The name of the cache blob a snapshot file links to, when it is a sha256 (an LFS file's), else ``None``."""
    name = path.resolve().name
    return name if _SHA256.fullmatch(name) else None


def _evict(path: Path) -> None:
    """Remove a snapshot file and the blob it links to, so the next resolve downloads again."""
    blob = path.resolve()
    path.unlink(missing_ok=True)
    blob.unlink(missing_ok=True)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
