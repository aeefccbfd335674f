"""The report's comparison of the judge's routing and the instruction length limits: what each configuration
scored on test (macro and per criterion, with intervals) and what its judging cost (calls, prompt tokens and the
prompt tokens the endpoint served from its prefix cache)."""

from __future__ import annotations

from collections.abc import Sequence
from statistics import fmean

from judgeopt.orchestrator.study.reporting.aggregate import Aggregate
from judgeopt.orchestrator.study.reporting.document import Paragraph, Section, Subheading, Table
from judgeopt.orchestrator.study.reporting.formatting import number
from judgeopt.orchestrator.study.reporting.inputs import Cell, Configuration
from judgeopt.orchestrator.study.reporting.sections import interval

COST_FIELDS = ("llm_calls", "prompt_tokens", "cached_prompt_tokens")
"""Per role, what the cost table gives per run (the store's ``usage_by_role`` keys)."""


def _limits(cell: Cell) -> str:
    max_tokens, max_ratio = cell.length_limits
    parts = [f"≤ {max_tokens} tokens"] if max_tokens is not None else []
    parts += [f"≤ {max_ratio:g} × median"] if max_ratio is not None else []
    return ", ".join(parts) or "off"


def _settings(config: Configuration) -> tuple[str, str]:
    """The configuration's judge routing and length limits (its runs share them: a variant sets both)."""
    return config.cells[0].judge_routing, _limits(config.cells[0])


def _with_interval(value: float | None, bounds: tuple[float, float] | None) -> str:
    return number(value) if bounds is None else f"{number(value)} {interval(bounds)}"


def _quality_row(agg: Aggregate, criteria: Sequence[str]) -> tuple[str, ...]:
    best = agg.best_step
    intervals = agg.rho_intervals or {}
    per_criterion = [
        _with_interval(fmean(agg.rho[c][best]) if best in agg.rho[c] else None, intervals.get(c)) for c in criteria
    ]
    return (
        agg.config.label,
        *_settings(agg.config),
        str(len(agg.config.cells)),
        "—" if best is None else str(best),
        _with_interval(agg.mean_macro(best), intervals.get("macro")),
        *per_criterion,
    )


def _per_run(config: Configuration, role: str | None, field: str) -> float:
    """``field`` of ``role``'s usage (every role's with ``None``), the mean over the configuration's runs."""
    totals = [sum(u.get(field, 0) or 0 for r, u in c.usage.items() if role in (None, r)) for c in config.cells]
    return fmean(totals)


def _rejected(config: Configuration) -> int:
    """Rewrites refused for length over the configuration's runs (criteria × steps)."""
    return sum(len(step.get("length_rejected") or ()) for c in config.cells for step in c.summary["steps"])


def _cost_row(config: Configuration) -> tuple[str, ...]:
    judge = [f"{_per_run(config, 'judge', f):,.0f}" for f in COST_FIELDS]
    every = [f"{_per_run(config, None, f):,.0f}" for f in COST_FIELDS]
    return (config.label, *_settings(config), *judge, *every, str(_rejected(config)))


def applies(configs: Sequence[Configuration]) -> bool:
    """Whether any run routed its judge other than jointly or limited its instructions' length."""
    return any(c.judge_routing != "joint" or c.length_limits != (None, None) for cfg in configs for c in cfg.cells)


def inference_section(aggregates: Sequence[Aggregate], criteria: Sequence[str]) -> Section | None:
    """One row per configuration in each of two tables, test ρ and cost; ``None`` when every run judged jointly
    with no length limit."""
    if not applies([agg.config for agg in aggregates]):
        return None
    quality = tuple(_quality_row(agg, criteria) for agg in aggregates)
    cost = tuple(_cost_row(agg.config) for agg in aggregates)
    settings = ("configuration", "judge routing", "length limit")
    return Section(
        "Judge routing and instruction length limits",
        (
            Paragraph(
                "Each configuration's judge routing (joint: one call scores every criterion; prefix_shared: one call "
                "per criterion, all starting with the same task and sample, so an endpoint's prefix cache prefills "
                "the sample once) and length limit on rewritten instructions. Test ρ at the step chosen on "
                "validation, the mean over runs, with its 95% interval: a bootstrap over the test items every run "
                "scored, one draw for every run (runs not resampled); — without bootstrap resamples."
            ),
            Table(
                (*settings, "runs", "best step", "macro ρ [95% CI]", *(f"{c} ρ [95% CI]" for c in criteria)),
                quality,
                labels=3,
            ),
            Subheading("Cost per run: the judge's and every role's model calls and prompt tokens"),
            Paragraph(
                "Mean per run over the configuration's runs, from each run's store (every attempt). Cached prompt "
                "tokens are those the endpoint reported serving from its prefix cache "
                "(usage.prompt_tokens_details.cached_tokens); an endpoint that does not report them counts 0. "
                "Rejected rewrites: criteria whose rewritten instruction stayed over its limit when asked again, "
                "summed over steps and runs."
            ),
            Table(
                (
                    *settings,
                    "judge calls",
                    "judge prompt tokens",
                    "judge cached prompt tokens",
                    "all calls",
                    "all prompt tokens",
                    "all cached prompt tokens",
                    "rejected rewrites",
                ),
                cost,
                labels=3,
            ),
        ),
    )
