"""A loopback stand-in for the public origins of the built-in data files: a folder laid out as
``<owner>/<repository>/<commit>/<path>`` (as raw file hosts serve them), served over HTTP on 127.0.0.1, with
BARTScore's SummEval pickle rebuilt from the local ``summeval.jsonl`` in the upstream layout."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import json
import pickle
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from judgeopt.orchestrator.data.sources import PINNED

# The upstream pickle keeps the scores in its own order; the conversion writes the file's order whatever it is.
UPSTREAM_SCORE_ORDER = ("relevance", "fluency", "consistency", "coherence")


def bartscore_docs(summeval_jsonl: Path) -> dict[str, Any]:
    """The upstream ``data.pkl`` object: ``{doc_id: {src, ref_summ, ref_summs, sys_summs: {id: {sys_summ,
    scores}}}}``."""
    docs: dict[str, Any] = {}
    for line in summeval_jsonl.read_text(encoding="utf-8").splitlines():
        doc = json.loads(line)
        docs[doc["doc_id"]] = {
            "src": doc["source"],
            "ref_summ": doc["reference"],
            "ref_summs": doc["references"],
            "sys_summs": {
                summary["system_id"]: {
                    "sys_summ": summary["summary"],
                    "scores": {key: summary["scores"][key] for key in UPSTREAM_SCORE_ORDER},
                }
                for summary in doc["summaries"]
            },
        }
    return docs


def lay_out_upstream(root: Path, shared_files: dict[str, Path], pickle_bytes: bytes | None = None) -> dict[str, str]:
    """Write every pinned file under ``root`` where its origin serves it (the SummEval pickle rebuilt from the
    local file unless ``pickle_bytes`` is given); returns the sha256 of each published file, by data file name."""
    published = {}
    for name, pinned in PINNED.items():
        path = root / pinned.repository / pinned.commit / pinned.path
        path.parent.mkdir(parents=True, exist_ok=True)
        if pinned.convert is None:
            shutil.copy(shared_files[name], path)
        else:
            path.write_bytes(pickle_bytes or pickle.dumps(bartscore_docs(shared_files[name]), protocol=4))
        published[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return published


class CountingServer(http.server.ThreadingHTTPServer):
    """Serves a folder on 127.0.0.1 and records the path of every GET."""

    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), functools.partial(_CountingHandler, directory=str(root)))
        self.requests: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"


class _CountingHandler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self) -> None:
        assert isinstance(self.server, CountingServer)
        self.server.requests.append(self.path)
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def serving(root: Path) -> Iterator[CountingServer]:
    server = CountingServer(root)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
