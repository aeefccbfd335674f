"""Finding data files: in ``data_dir``, ``$JUDGEOPT_DATA_DIR``, ``<checkout>/../shared/data`` and the user cache, in
that order; a file in none of them is downloaded into the cache once, if a URL is configured."""

from __future__ import annotations

import http.client
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import structlog

from judgeopt.orchestrator.errors import DataError

log = structlog.get_logger(__name__)

DOWNLOAD_TIMEOUT_S = 30.0


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
    ``$JUDGEOPT_DATA_URL``; one that ends with ``/`` is a base to which ``name`` is appended.
    """
    relative = Path(name)
    if not relative.parts or relative.is_absolute() or ".." in relative.parts:
        raise DataError(f"a data file name must be a relative path inside the data dir, got {name!r}")
    places = _data_dirs(data_dir)
    for place in places:
        if (place / relative).is_file():
            return place / relative
    not_found = f"{name} not found in {', '.join(str(place) for place in places)}"
    base_url = download_url or os.environ.get("JUDGEOPT_DATA_URL")
    if not base_url:
        raise DataError(f"{not_found}; no download URL is set (download_url or $JUDGEOPT_DATA_URL)")
    url = base_url + urllib.parse.quote(relative.as_posix()) if base_url.endswith("/") else base_url
    target = user_cache_dir() / relative
    try:
        _download(url, target)
    except (OSError, http.client.HTTPException) as exc:
        raise DataError(f"{not_found}; download from {url} failed: {_download_failure(exc)}") from None
    log.info("data.downloaded", url=url, path=str(target))
    return target


def _download(url: str, target: Path) -> None:
    """Fetch into a temporary file beside ``target``, then rename it, so that a partial file is never found."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    partial = Path(name)
    try:
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            shutil.copyfileobj(response, out)
        partial.replace(target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


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
