"""``judgeopt local-llm``: serve the embedded local model until stopped."""

from __future__ import annotations

import argparse

from judgeopt.core.flags import add_local_model_flag
from judgeopt.core.log_defaults import LogDefaults

LOG_DEFAULTS = LogDefaults(level="info")
"""What this command logs unless --log-format and --log-level say otherwise."""
HELP = "serve the embedded local model until stopped"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_local_model_flag(parser)
    parser.add_argument("--logprobs", action="store_true", help="return token log-probabilities (more memory)")


def run(args: argparse.Namespace) -> int:
    import contextlib
    import signal
    import time
    from typing import Any

    from judgeopt.core.local_model import LocalModelServer

    with LocalModelServer(args.local_model, logprobs=args.logprobs) as server:
        print(f"local model {server.model_name} serving at {server.base_url}  (Ctrl-C stops it)", flush=True)
        stopped = False

        def stop(*_: Any) -> None:
            nonlocal stopped
            stopped = True

        signal.signal(signal.SIGTERM, stop)
        with contextlib.suppress(KeyboardInterrupt):
            while not stopped:
                time.sleep(0.2)
    return 0
