"""The scripted OpenAI-compatible endpoint of the tests, in a process of its own, with a fixed latency per reply.

    .venv/bin/python bench/fake_endpoint.py --delay 0.1 [--worse-marker ZZWORSE] [--tie] [--textgrad] [--log FILE]

Prints ``listening on http://127.0.0.1:PORT/v1`` and serves until SIGTERM. Replies come from the test suite's
``deterministic_handler()`` (tests/helpers/scripts.py: each judgeopt role answered as a pure function of the
request), each delayed by ``--delay`` seconds; ``--tie`` makes the judge answer a constant (every candidate ties,
so a gate accepts it and no judge call is served from the cache). With ``--textgrad``, requests from no judgeopt
role (TextGrad's own prompts) get TextGrad-shaped replies: an ``<IMPROVED_VARIABLE>`` block to the optimizer, a
score to the judge forward pass, a sentence of feedback otherwise. ``--log`` appends one JSON line per request
(role, arrival time, and with ``--log-bodies`` the whole request body).
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

from _support import test_helpers

TEXTGRAD_OPTIMIZER_TAG = "<IMPROVED_VARIABLE>"


def textgrad_kind(request: Any) -> str:
    """Which TextGrad call a request is: its optimizer step, the judge's forward pass, or an evaluation/gradient."""
    if TEXTGRAD_OPTIMIZER_TAG in request.system_text + "\n" + request.last_user_text:
        return "textgrad optimizer"
    if request.system_text.startswith("Rate"):  # the judge's forward pass: the system prompt is the instruction
        return "textgrad forward"
    return "textgrad loss or gradient"


def _textgrad_reply(request: Any, completion: Any) -> Any:
    kind = textgrad_kind(request)
    if kind == "textgrad optimizer":
        revision = abs(hash(request.last_user_text)) % 9973
        return completion(
            f"<IMPROVED_VARIABLE>Rate the summary's coherence from 1 to 5, anchoring each level, "
            f"revision {revision}.</IMPROVED_VARIABLE>"
        )
    if kind == "textgrad forward":
        return completion(str(1 + len(request.last_user_text) % 5))
    return completion("The predicted score is one point too high: the judge overrated the summary.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before every reply")
    parser.add_argument("--worse-marker", help="deterministic_handler(worse_marker=…): candidates the gate rejects")
    parser.add_argument("--tie", action="store_true", help="the judge answers a constant (tie=True)")
    parser.add_argument("--textgrad", action="store_true", help="answer TextGrad's prompts too")
    parser.add_argument("--log", type=Path, help="append one JSON line per request here")
    parser.add_argument("--log-bodies", action="store_true", help="include the request body in the log")
    args = parser.parse_args()

    fake = test_helpers("fake_openai")
    scripts = test_helpers("scripts")
    # The helper server writes a reply's headers and body in two sends; with Nagle's algorithm on, the body waits
    # for the client's delayed ACK (~40 ms on Linux) on every reply. Real endpoints (uvicorn, vLLM) set
    # TCP_NODELAY; so does this process, through the standard StreamRequestHandler switch.
    fake._RequestHandler.disable_nagle_algorithm = True
    inner = scripts.deterministic_handler(worse_marker=args.worse_marker, tie=args.tie)
    lock = threading.Lock()
    log_file = args.log.open("a", encoding="utf-8") if args.log else None

    def role_of(request: Any) -> str:
        role: str = scripts.role_of(request)
        # The study protocol's prompts are TextGrad's own, so with --textgrad (judgeopt then runs its own protocol)
        # a request the study's marks recognise is TextGrad's.
        theirs = role == "unknown" or scripts.study_role_of(request) is not None
        return textgrad_kind(request) if args.textgrad and theirs else role

    def answer(request: Any) -> Any:
        return _textgrad_reply(request, fake.Completion) if role_of(request).startswith("textgrad") else inner(request)

    delayed = scripts.with_latency(answer, args.delay)

    def handle(request: Any) -> Any:
        arrived = time.time()
        role = role_of(request)
        reply = delayed(request)
        if log_file is not None:
            entry: dict[str, Any] = {"role": role, "at": arrived}
            if args.log_bodies:
                entry["body"] = request.body
            with lock:
                log_file.write(json.dumps(entry) + "\n")
                log_file.flush()
        return reply

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with fake.FakeOpenAI(handle) as server:
        print(f"listening on {server.base_url}", flush=True)
        stop.wait()
    if log_file is not None:
        log_file.close()


if __name__ == "__main__":
    main()
