"""The study's published numbers (arXiv 2605.26046, "When Gradients Collide"), shown beside a report's own."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StudyRow:
    initial: float
    best: float
    step: int
    hvi: float | None
    """The hypervolume of the archive of run-mean per-criterion ρ vectors at the last step (reference −1)."""

    def __str__(self) -> str:
        hvi = "" if self.hvi is None else f", HVI {self.hvi:.3f}"
        return f"{self.initial:.3f} → {self.best:.3f} (step {self.step}){hvi}"


STUDY_TABLE1 = {  # Table 1, MAE-gate rows, Qwen3 judge
    "single": StudyRow(0.274, 0.305, 2, None),
    "SSS": StudyRow(0.284, 0.284, 0, 2.749),
    "SSC": StudyRow(0.289, 0.289, 0, 2.832),
    "SCC": StudyRow(0.282, 0.282, 0, 2.801),
    "CCC": StudyRow(0.285, 0.296, 9, 2.900),
}
STUDY_NEVER_IMPROVED = "6 of 10 configurations never improved (best-on-test basis)"
STUDY_SPECIFICITY = {"per-criterion": 9.0, "joint": 3.7}
"""Mean gradient specificity (1–10) with per-criterion gradients (Single-Task, SSS, SSC) and with joint ones (SCC,
CCC), each the mean of its modes' means over both gate settings."""
STUDY_SPECIFICITY_DROP = -0.59
"""The study's relative change from per-criterion to joint gradients, as it reports it (1 − 3.7 / 9.0 = 58.9%)."""


@dataclass(frozen=True)
class StudyInterferenceRow:
    label: str
    rho: dict[str, float]
    macro_rho: float


STUDY_INTERFERENCE = {  # the cherry-pick experiment: best Single-Task instructions chosen on test, Qwen3 judge
    "generic": StudyInterferenceRow(
        "Initial (generic)", {"fluency": 0.366, "relevance": 0.208, "coherence": 0.308, "consistency": 0.256}, 0.284
    ),
    "separate": StudyInterferenceRow(
        "Single-Task (best per criterion)",
        {"fluency": 0.350, "relevance": 0.168, "coherence": 0.338, "consistency": 0.363},
        0.305,
    ),
    "stitched": StudyInterferenceRow(
        "Cherry-pick (combined)",
        {"fluency": 0.303, "relevance": 0.257, "coherence": 0.215, "consistency": 0.105},
        0.220,
    ),
}
