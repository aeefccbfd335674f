"""Instruction lengths: the per-criterion limits of length-aware synthesis, and the asymmetry the report shows.

The study's proposed mechanism for stitched instructions hurting one another is length asymmetry (one rubric grows
long while another stays a line); these are the measures of it and the limits that bound it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from statistics import median

from judgeopt.core.tokens import approx_tokens
from judgeopt.orchestrator.engine.artifacts import PromptState


def instruction_lengths(prompt: PromptState) -> dict[str, int]:
    """Each criterion's instruction length in approximate tokens (words and punctuation marks)."""
    return {name: approx_tokens(text) for name, text in prompt.instructions}


def asymmetry(lengths: Mapping[str, int]) -> float | None:
    """The longest instruction's length over the shortest's; None with fewer than two or an empty one."""
    if len(lengths) < 2 or min(lengths.values()) == 0:
        return None
    return max(lengths.values()) / min(lengths.values())


def instruction_limits(prompt: PromptState, max_tokens: int | None, max_ratio: float | None) -> dict[str, int]:
    """Every criterion's limit on its rewritten instruction: ``max_tokens``, and ``max_ratio`` × the median of the
    current instructions' lengths (the smaller when both are set); empty when neither is."""
    limits = [max_tokens] if max_tokens is not None else []
    if max_ratio is not None:
        limits.append(max(1, math.floor(max_ratio * median(instruction_lengths(prompt).values()))))
    return dict.fromkeys(prompt.criteria, min(limits)) if limits else {}
