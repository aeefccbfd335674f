"""Text comparisons tests share."""

from __future__ import annotations

from collections.abc import Sequence


def common_prefix(texts: Sequence[str]) -> str:
    """The longest string that every one of ``texts`` starts with, compared character by character."""
    if not texts:
        return ""
    first, last = min(texts), max(texts)  # what the sorted extremes share, every text between them shares too
    length = next((i for i, (a, b) in enumerate(zip(first, last, strict=False)) if a != b), min(len(first), len(last)))
    return first[:length]
