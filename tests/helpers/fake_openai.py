"""A scripted OpenAI-compatible chat-completions server for tests.

The server speaks real HTTP/1.1 (keep-alive included) on 127.0.0.1, so the real ``openai`` client and httpx
can be pointed at it. Each ``POST /v1/chat/completions`` is recorded and passed to a handler, which returns a
``Reply`` describing what the server should do: answer a completion, fail with an HTTP error, hang, send
garbage, or reset the connection.

    with FakeOpenAI(static("hello")) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
"""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import struct
import sys
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from types import TracebackType
from typing import Any, TypeAlias

__all__ = [
    "Completion",
    "FakeOpenAI",
    "Garbage",
    "Handler",
    "Hang",
    "HttpError",
    "RecordedRequest",
    "Reply",
    "Reset",
    "ScriptExhaustedError",
    "TokenLogprob",
    "by_system_prompt",
    "echo_authorization",
    "sequence",
    "static",
]

CHAT_PATH = "/v1/chat/completions"
MODELS_PATH = "/v1/models"
FAKE_MODEL_ID = "fake-model"


# -------------------- replies


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token with its log-probability and its top alternatives ``(token, logprob)``."""

    token: str
    logprob: float
    top: list[tuple[str, float]] = field(default_factory=list)


@dataclass(frozen=True)
class Completion:
    """Answer 200 with a standard ``chat.completion`` body, after ``delay`` seconds."""

    content: str
    logprobs: list[TokenLogprob] | None = None
    prompt_tokens: int = 10
    completion_tokens: int = 5
    finish_reason: str = "stop"
    delay: float = 0.0
    logprob_bytes: bool = True
    """Send each logprob entry's ``bytes``; False sends ``bytes: null`` as llama-cpp-python does."""
    cached_tokens: int | None = None
    """Report ``usage.prompt_tokens_details.cached_tokens`` (prompt tokens served by a prefix cache)."""


@dataclass(frozen=True)
class HttpError:
    """Answer ``status`` with an OpenAI-style error body and extra ``headers``, after ``delay`` seconds."""

    status: int
    message: str = "error"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass(frozen=True)
class Hang:
    """Sleep ``seconds`` (cut short when the server stops), then answer an empty completion."""

    seconds: float


@dataclass(frozen=True)
class Garbage:
    """Answer ``body`` verbatim with the given status and content type."""

    body: bytes
    status: int = 200
    content_type: str = "application/json"


@dataclass(frozen=True)
class Reset:
    """Drop the connection without any response (TCP reset)."""


Reply: TypeAlias = Completion | HttpError | Hang | Garbage | Reset


# -------------------- requests


def _text_of(content: Any) -> str:
    """Text of a message content: the string itself, or the text parts of a content-part list joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type", "text") == "text"
        ]
        return "\n".join(texts)
    return ""


@dataclass(frozen=True)
class RecordedRequest:
    """A chat-completions request as the server received it."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    received_at: float = 0.0
    """``time.monotonic()`` when the request arrived (for rate-limit checks)."""

    @property
    def model(self) -> str:
        """The requested model name ("" if absent)."""
        return str(self.body.get("model", ""))

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The request's messages, as sent."""
        messages = self.body.get("messages", [])
        return [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []

    @property
    def last_user_text(self) -> str:
        """Text of the last ``user`` message ("" if there is none)."""
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return _text_of(message.get("content"))
        return ""

    @property
    def system_text(self) -> str:
        """Text of the first ``system`` (or ``developer``) message ("" if there is none)."""
        for message in self.messages:
            if message.get("role") in ("system", "developer"):
                return _text_of(message.get("content"))
        return ""


Handler: TypeAlias = Callable[[RecordedRequest], Reply]


# -------------------- handler builders


class ScriptExhaustedError(RuntimeError):
    """Raised by a ``sequence`` handler asked for more replies than it was given."""


def static(content: str) -> Handler:
    """A handler that always answers ``Completion(content)``."""
    reply = Completion(content)

    def handle(_request: RecordedRequest) -> Reply:
        return reply

    return handle


def sequence(replies: list[Reply], then: Reply | None = None) -> Handler:
    """A handler whose n-th call gets ``replies[n]``; afterwards ``then``, or ScriptExhaustedError if None."""
    script = list(replies)
    counter = itertools.count()
    lock = threading.Lock()

    def handle(_request: RecordedRequest) -> Reply:
        with lock:
            index = next(counter)
        if index < len(script):
            return script[index]
        if then is None:
            raise ScriptExhaustedError(f"sequence got request #{index + 1} but holds {len(script)} replies")
        return then

    return handle


def by_system_prompt(routes: dict[str, Handler], default: Handler) -> Handler:
    """A handler that delegates to the first route whose key occurs in the system text, else ``default``."""
    table = dict(routes)

    def handle(request: RecordedRequest) -> Reply:
        system = request.system_text
        for key, route in table.items():
            if key in system:
                return route(request)
        return default(request)

    return handle


def echo_authorization(status: int = 401) -> Handler:
    """A handler answering ``status`` with an error message that repeats the request's ``Authorization`` header, as
    endpoints reporting a wrong key do (``Incorrect API key provided: …``): what a service must never pass on."""

    def handle(request: RecordedRequest) -> Reply:
        return HttpError(status, f"Incorrect API key provided: {request.headers.get('authorization', '(none)')}")

    return handle


# -------------------- bodies


_ERROR_KINDS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("not_found_error", "model_not_found"),
    408: ("timeout_error", None),
    409: ("conflict_error", None),
    422: ("invalid_request_error", None),
    429: ("rate_limit_error", "rate_limit_exceeded"),
}


def _error_body(status: int, message: str) -> bytes:
    """An OpenAI-style ``{"error": {...}}`` JSON body."""
    fallback = ("server_error" if status >= 500 else "invalid_request_error", None)
    kind, code = _ERROR_KINDS.get(status, fallback)
    return json.dumps({"error": {"message": message, "type": kind, "code": code, "param": None}}).encode()


def _logprob_item(token: str, logprob: float, *, with_bytes: bool = True) -> dict[str, Any]:
    """One token entry in OpenAI logprobs format (``bytes: null`` without bytes, as llama-cpp-python sends it)."""
    return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8")) if with_bytes else None}


def _completion_body(reply: Completion, model: str, completion_id: str) -> bytes:
    """A ``chat.completion`` JSON body for ``reply``."""
    logprobs: dict[str, Any] | None = None
    if reply.logprobs is not None:
        logprobs = {
            "content": [
                {
                    **_logprob_item(item.token, item.logprob, with_bytes=reply.logprob_bytes),
                    "top_logprobs": [
                        _logprob_item(token, logprob, with_bytes=reply.logprob_bytes) for token, logprob in item.top
                    ],
                }
                for item in reply.logprobs
            ],
            "refusal": None,
        }
    body = {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply.content, "refusal": None},
                "finish_reason": reply.finish_reason,
                "logprobs": logprobs,
            }
        ],
        "usage": {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        }
        | ({} if reply.cached_tokens is None else {"prompt_tokens_details": {"cached_tokens": reply.cached_tokens}}),
    }
    return json.dumps(body).encode()


# -------------------- HTTP plumbing


_Request: TypeAlias = socket.socket | tuple[bytes, socket.socket]


class _Server(ThreadingHTTPServer):
    """Threading HTTP server that tracks its connections so ``stop()`` can cut them."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, owner: FakeOpenAI) -> None:
        self.owner = owner
        self._lock = threading.Lock()
        self._connections: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self._resets: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        super().__init__((owner.host, 0), _RequestHandler)

    def server_bind(self) -> None:
        """Bind without HTTPServer's reverse-DNS lookup (``getfqdn``), which can be slow."""
        TCPServer.server_bind(self)
        host, port = self.socket.getsockname()[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: _Request, client_address: Any) -> None:
        """Track the connection, then serve it on a daemon thread."""
        if isinstance(request, socket.socket):
            with self._lock:
                self._connections.add(request)
        super().process_request(request, client_address)

    def mark_reset(self, connection: socket.socket) -> None:
        """Close ``connection`` with a TCP reset instead of an orderly shutdown once its handler returns."""
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with self._lock:
            self._resets.add(connection)

    def shutdown_request(self, request: _Request) -> None:
        """Close a finished connection (abruptly if it was marked for reset)."""
        if isinstance(request, socket.socket):
            with self._lock:
                self._connections.discard(request)
                reset = request in self._resets
            if reset:
                request.close()
                return
        super().shutdown_request(request)

    def cut_connections(self) -> None:
        """Shut down every open connection, waking handler threads blocked on them."""
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: _Request, client_address: Any) -> None:
        """Ignore socket errors (client went away, server stopped); report anything else."""
        if isinstance(sys.exception(), OSError):
            return
        super().handle_error(request, client_address)


class _RequestHandler(BaseHTTPRequestHandler):
    """Routes requests to the owning ``FakeOpenAI``."""

    disable_nagle_algorithm = True  # headers and body go out in two writes; don't wait for a delayed ACK

    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet."""

    def _read_body(self) -> bytes:
        """Read the request body fully, by Content-Length."""
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
        """Send a complete response, always with Content-Length."""
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _send_error_json(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        """Send an OpenAI-style error response."""
        self._send(status, _error_body(status, message), "application/json", headers)

    def do_GET(self) -> None:
        """Serve the model list; 404 for anything else."""
        self._read_body()
        if self.path.split("?", 1)[0].rstrip("/") == MODELS_PATH:
            body = {"object": "list", "data": [{"id": FAKE_MODEL_ID, "object": "model"}]}
            self._send(200, json.dumps(body).encode(), "application/json")
        else:
            self._send_error_json(404, f"no route for GET {self.path}")

    def do_POST(self) -> None:
        """Serve chat completions through the handler; 404 for anything else."""
        raw = self._read_body()
        path = self.path.split("?", 1)[0]
        if path.rstrip("/") != CHAT_PATH:
            self._send_error_json(404, f"no route for POST {self.path}")
            return
        try:
            body = json.loads(raw) if raw else {}
        except ValueError as exc:
            self._send_error_json(400, f"request body is not JSON: {exc}")
            return
        if not isinstance(body, dict):
            self._send_error_json(400, "request body is not a JSON object")
            return
        headers = {name.lower(): value for name, value in self.headers.items()}
        request = RecordedRequest(path=path, headers=headers, body=body, received_at=time.monotonic())
        self._reply(request, self.server.owner._dispatch(request))

    def _other(self) -> None:
        """404 for methods the fake does not serve."""
        self._read_body()
        self._send_error_json(404, f"no route for {self.command} {self.path}")

    do_PUT = do_DELETE = do_PATCH = _other

    def _reply(self, request: RecordedRequest, reply: Reply) -> None:
        """Carry out ``reply``."""
        owner = self.server.owner
        if isinstance(reply, Completion):
            owner._pause(reply.delay)
            self._send(200, _completion_body(reply, request.model, owner._next_id()), "application/json")
        elif isinstance(reply, HttpError):
            owner._pause(reply.delay)
            self._send_error_json(reply.status, reply.message, reply.headers)
        elif isinstance(reply, Hang):
            owner._pause(reply.seconds)
            empty = _completion_body(Completion(""), request.model, owner._next_id())
            self._send(200, empty, "application/json")
        elif isinstance(reply, Garbage):
            self._send(reply.status, reply.body, reply.content_type)
        elif isinstance(reply, Reset):
            self.server.mark_reset(self.connection)
            self.close_connection = True
        else:
            self._send_error_json(500, f"fake handler returned a non-Reply: {reply!r}")


# -------------------- server


class FakeOpenAI:
    """A scripted OpenAI-compatible server on 127.0.0.1 (an ephemeral port), driven by a ``Handler``."""

    def __init__(self, handler: Handler, host: str = "127.0.0.1") -> None:
        self.host = host
        """The address to bind (default loopback; a bridge address to serve network namespaces)."""
        self._handler = handler
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._handler_errors: list[Exception] = []
        self._ids = itertools.count(1)
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # lifecycle

    def start(self) -> FakeOpenAI:
        """Bind a free port and serve on a daemon thread."""
        if self._server is not None:
            raise RuntimeError("FakeOpenAI is already running")
        self._stopping.clear()
        server = _Server(self)
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-openai", daemon=True
        )
        self._server, self._thread = server, thread
        thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, cut open connections and wake any ``Hang``; never waits on handler threads."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        self._stopping.set()
        server.shutdown()
        server.server_close()
        server.cut_connections()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # inspection and control

    @property
    def port(self) -> int:
        """The bound port (the server must be running)."""
        if self._server is None:
            raise RuntimeError("FakeOpenAI is not running")
        return self._server.server_port

    @property
    def base_url(self) -> str:
        """The OpenAI ``base_url``: ``http://HOST:PORT/v1``."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of the chat-completions requests received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def handler_errors(self) -> list[Exception]:
        """A copy of the exceptions the handler raised (each was answered with a 500)."""
        with self._lock:
            return list(self._handler_errors)

    def set_handler(self, handler: Handler) -> None:
        """Replace the handler for subsequent requests."""
        with self._lock:
            self._handler = handler

    def clear(self) -> None:
        """Forget recorded requests and handler errors."""
        with self._lock:
            self._requests.clear()
            self._handler_errors.clear()

    # used by the request handler

    def _dispatch(self, request: RecordedRequest) -> Reply:
        """Record ``request`` and ask the handler for a reply; a raising handler yields a 500."""
        with self._lock:
            self._requests.append(request)
            handler = self._handler
        try:
            return handler(request)
        except Exception as exc:
            with self._lock:
                self._handler_errors.append(exc)
            return HttpError(500, f"fake handler raised {type(exc).__name__}: {exc}")

    def _pause(self, seconds: float) -> None:
        """Sleep up to ``seconds``, returning early when the server stops."""
        if seconds > 0:
            self._stopping.wait(seconds)

    def _next_id(self) -> str:
        """A fresh completion id."""
        with self._lock:
            return f"chatcmpl-fake-{next(self._ids)}"
