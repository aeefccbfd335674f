"""Finding data files: in ``data_dir``, ``$JUDGEOPT_DATA_DIR``, ``<checkout>/../shared/data`` and the user cache, in
that order; a file in none of them is downloaded into the cache once, from a configured mirror or, for a built-in
data file, from its pinned public origin (``sources.py``), and checked by its sha256."""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import structlog

from judgeopt.core.files import write_atomic
from judgeopt.orchestrator.data.sources import PINNED
from judgeopt.orchestrator.errors import DataError

log = structlog.get_logger(__name__)

DOWNLOAD_TIMEOUT_S = 30.0
CHUNK_BYTES = 64 * 1024

Convert = Callable[[str, bytes], bytes]  # (origin, downloaded bytes) -> the data file's bytes


def checkout_data_dir() -> Path:
    """``../shared/data`` beside the checkout, whose root holds the ``orchestrator`` folder (this file is
    ``<checkout>/orchestrator/data/locating.py``)."""
    return Path(__file__).resolve().parents[3] / "shared" / "data"


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/judgeopt``, by default ``~/.cache/judgeopt``: where downloaded data files go."""
    cache_home = os.environ.get("XDG_CACHE_HOME")
    return (Path(cache_home) if cache_home else Path.home() / ".cache") / "judgeopt"


def _data_dirs(data_dir: Path | None) -> list[Path]:
    places = [] if data_dir is None else [data_dir]
    if env := os.environ.get("JUDGEOPT_DATA_DIR"):
        places.append(Path(env))
    places += [checkout_data_dir(), user_cache_dir()]
    return list(dict.fromkeys(places))


def locate_data_file(name: str, data_dir: Path | None = None, *, download_url: str | None = None) -> Path:
    """The first ``<dir>/<name>`` among the data dirs; failing that, the file downloaded into the user cache.

    ``name`` may hold a relative subpath (``wgc-summeval-split/train.parquet``). The URL is ``download_url``, else
    ``$JUDGEOPT_DATA_URL`` (a mirror of the data dir: one that ends with ``/`` is a base to which ``name`` is
    appended), else, for a built-in data file, its pinned public origin (``sources.PINNED``). A built-in file is
    checked against its sha256 wherever it comes from, and nothing is kept when it differs.
    """
    relative = Path(name)
    if not relative.parts or relative.is_absolute() or ".." in relative.parts:
        raise DataError(f"a data file name must be a relative path inside the data dir, got {name!r}")
    places = _data_dirs(data_dir)
    for place in places:
        if (place / relative).is_file():
            return place / relative
    not_found = f"{name} not found in {', '.join(str(place) for place in places)}"
    pinned = PINNED.get(relative.as_posix())
    base_url = download_url or os.environ.get("JUDGEOPT_DATA_URL")
    if base_url:
        url = base_url + urllib.parse.quote(relative.as_posix()) if base_url.endswith("/") else base_url
        published_sha256, convert = (None if pinned is None else pinned.sha256), None
    elif pinned is not None:
        url, published_sha256, convert = pinned.url(), pinned.published_sha256, pinned.convert
    else:
        raise DataError(f"{not_found}; no download URL is set (download_url or $JUDGEOPT_DATA_URL)")
    target = user_cache_dir() / relative
    try:
        _download(url, target, published_sha256, None if pinned is None else pinned.sha256, convert)
    except (OSError, http.client.HTTPException) as exc:
        raise DataError(f"{not_found}; download from {url} failed: {_download_failure(exc)}") from None
    except DataError as exc:
        raise DataError(f"{not_found}; download from {url} failed: {exc}; nothing was kept") from None
    log.info("data.downloaded", url=url, path=str(target))
    return target


def _download(
    url: str, target: Path, sha256: str | None, converted_sha256: str | None, convert: Convert | None
) -> None:
    """Fetch into a temporary file beside ``target`` with a progress bar and check its sha256 (if given); convert it
    (if asked) and check the result's; only then write ``target``, so a partial or unverified file is never found."""
    from rich.console import Console
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    columns = (*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn())

    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    partial = Path(name)
    digest = hashlib.sha256()
    try:
        with (
            os.fdopen(handle, "wb") as out,
            urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response,
            Progress(*columns, console=Console(stderr=True), transient=True) as bar,
        ):
            size = response.headers.get("Content-Length")
            task = bar.add_task(f"downloading {target.name}", total=int(size) if size and size.isdigit() else None)
            while chunk := response.read(CHUNK_BYTES):
                out.write(chunk)
                digest.update(chunk)
                bar.advance(task, len(chunk))
        _check_sha256("its", digest.hexdigest(), sha256)
        if convert is None:
            partial.replace(target)
            return
        converted = convert(url, partial.read_bytes())
        _check_sha256("the converted file's", hashlib.sha256(converted).hexdigest(), converted_sha256)
        write_atomic(target, converted)
    finally:
        partial.unlink(missing_ok=True)


def _check_sha256(whose: str, found: str, pinned: str | None) -> None:
    if pinned is not None and found != pinned:
        raise DataError(f"{whose} sha256 is {found}, not the pinned {pinned}")


def _download_failure(exc: OSError | http.client.HTTPException) -> str:
    """Why a download failed, on one line; an HTTP error's connection is released."""
    if isinstance(exc, urllib.error.HTTPError):
        exc.close()
        reason = f"HTTP {exc.code} {exc.reason}"
    elif isinstance(exc, urllib.error.URLError):
        reason = str(exc.reason)
    else:
        reason = str(exc) or type(exc).__name__
    return " ".join(reason.split())


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
