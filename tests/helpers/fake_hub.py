"""A loopback stand-in for the Hugging Face Hub, speaking as much of its API as ``huggingface_hub`` needs to list a
model repository's files and download one: ``HEAD``/``GET /{repo}/resolve/{revision}/{file}`` with the Hub's
headers (``X-Repo-Commit``, ``ETag``, ``X-Linked-Etag``, ``X-Linked-Size``) and ``GET
/api/models/{repo}/tree/{revision}``. Every request is recorded."""

from __future__ import annotations

import hashlib
import http.server
import json
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class HubFile:
    path: Path
    sha256: str = ""
    """What the Hub says the file's sha256 is (by default its real one)."""

    def __post_init__(self) -> None:
        self.sha256 = self.sha256 or hashlib.sha256(self.path.read_bytes()).hexdigest()


@dataclass
class FakeHub:
    repo_id: str
    files: dict[str, HubFile]
    requests: list[str] = field(default_factory=list)
    url: str = ""


class _HubHandler(http.server.BaseHTTPRequestHandler):
    hub: FakeHub

    def do_HEAD(self) -> None:
        self._resolve(body=False)

    def do_GET(self) -> None:
        if self.path.startswith(f"/api/models/{self.hub.repo_id}/tree/"):
            self._tree()
        else:
            self._resolve(body=True)

    def _resolve(self, *, body: bool) -> None:
        self.hub.requests.append(f"{self.command} {self.path}")
        prefix = f"/{self.hub.repo_id}/resolve/"
        revision, _, name = self.path.removeprefix(prefix).partition("/")
        hub_file = self.hub.files.get(name) if self.path.startswith(prefix) and revision in ("main", COMMIT) else None
        if hub_file is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        size = hub_file.path.stat().st_size
        self.send_response(200)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{hub_file.sha256}"')
        self.send_header("X-Linked-Etag", f'"{hub_file.sha256}"')
        self.send_header("X-Linked-Size", str(size))
        self.send_header("Content-Length", str(size))
        self.end_headers()
        if body:
            with hub_file.path.open("rb") as source:
                shutil.copyfileobj(source, self.wfile, 1 << 20)

    def _tree(self) -> None:
        self.hub.requests.append(f"{self.command} {self.path}")
        entries = [
            {
                "type": "file",
                "path": name,
                "size": f.path.stat().st_size,
                "oid": "0" * 40,
                "lfs": {"oid": f.sha256, "size": f.path.stat().st_size, "pointerSize": 134},
            }
            for name, f in self.hub.files.items()
        ]
        data = json.dumps(entries).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def serving(hub: FakeHub) -> Iterator[FakeHub]:
    """Serve ``hub`` on 127.0.0.1 for the ``with`` block; ``hub.url`` is its endpoint (for ``HF_ENDPOINT``)."""
    handler = type("Handler", (_HubHandler,), {"hub": hub})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
