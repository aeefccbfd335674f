"""A fault schedule for the scripted endpoint: a fixed share of distinct requests fail, each in one way, at most a
set number of times, so a retry budget larger than that absorbs every fault and the run's result cannot change."""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter

from helpers.fake_openai import Garbage, Handler, Hang, HttpError, RecordedRequest, Reply, Reset

HANG_SECONDS = 3.0
"""Longer than the model timeout the fault tests configure, so a hang is a client-side timeout."""

FAULTS: dict[str, Reply] = {
    "rate-limited": HttpError(429, "slow down", headers={"Retry-After": "1"}),
    "server-error": HttpError(500, "internal error"),
    "unavailable": HttpError(503, "overloaded"),
    "timeout": Hang(HANG_SECONDS),
    "reset": Reset(),
    "bad-gateway": HttpError(502, "bad gateway"),
    "html": Garbage(b"<html><body>502 Bad Gateway</body></html>", 200, "text/html"),
    "truncated-json": Garbage(b'{"id": "cmpl-1", "object": "chat.completion", "choices": [{"mess'),
}


class FaultSchedule:
    """Wraps a handler: a request whose content hashes into the first ``share`` of the space fails with the fault its
    hash picks, the first ``failures`` times it is seen; then (and for every other request) ``handler`` answers."""

    def __init__(
        self,
        handler: Handler,
        *,
        share: float = 0.25,
        failures: int = 1,
        seed: str = "faults",
        kinds: tuple[str, ...] = tuple(FAULTS),
    ) -> None:
        self._handler = handler
        self._kinds = kinds
        self._share = share
        self._failures = failures
        self._seed = seed
        self._seen: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.injected: Counter[str] = Counter()
        """Faults served, by kind."""
        self.answered = 0
        """Requests answered normally."""

    def _pick(self, key: str) -> str | None:
        digest = int(hashlib.sha256(f"{self._seed}\x1f{key}".encode()).hexdigest()[:12], 16)
        if digest % 10_000 >= self._share * 10_000:
            return None
        return self._kinds[(digest // 10_000) % len(self._kinds)]

    def __call__(self, request: RecordedRequest) -> Reply:
        key = json.dumps(request.messages, sort_keys=True)
        kind = self._pick(key)
        with self._lock:
            seen = self._seen[key]
            self._seen[key] += 1
            if kind is not None and seen < self._failures:
                self.injected[kind] += 1
                return FAULTS[kind]
            self.answered += 1
        return self._handler(request)

    @property
    def failed_share(self) -> float:
        """Share of all requests served so far that got a fault."""
        failed = sum(self.injected.values())
        return failed / max(1, failed + self.answered)
