"""A tokenizer-free length measure shared by the agents (length limits) and the orchestrator (reports)."""

from __future__ import annotations

import re

_TOKEN = re.compile(r"\w+|[^\w\s]")


def approx_tokens(text: str) -> int:
    """Word pieces and punctuation marks: a tokenizer-free length measure that needs no vocabulary download."""
    return len(_TOKEN.findall(text))
