"""The specificity fallback: the focus proxy on planted gradients, the policy's per-call routing from a sample's
artifacts, its agreement with planted evaluator ratings, and a CCC run on the scripted endpoint where a diluted
joint gradient (step 1) brings per-criterion loss and gradient calls for exactly the criteria it lost, which the
optimizer then receives, and a focused one (step 2) brings none; the audit passes."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from helpers.fake_openai import Completion, FakeOpenAI, RecordedRequest, Reply
from helpers.runs import BATCH, assert_audited_every_call, write_config
from helpers.scripts import SUMMEVAL, deterministic_handler, role_of

from judgeopt.cli import main
from judgeopt.core.models import ModelsConfig
from judgeopt.orchestrator.engine.artifacts import Gradient, StepArtifacts
from judgeopt.orchestrator.engine.budget import StepShape
from judgeopt.orchestrator.engine.focus import agreement, focus_shares
from judgeopt.orchestrator.engine.policy import PRESETS, RoutingState
from judgeopt.orchestrator.engine.store import Diagnostic, RunStore

DILUTED = {
    "keep": "Keep the coherence anchors.",
    "problem": "The coherence and fluency parts are vague.",
    "fix": "Describe coherence levels. Say what fluent text is.",
}
"""Four sentences: coherence named in 3, fluency in 1, consistency and relevance in none."""
FOCUSED = {
    "keep": "Keep the coherence anchors. Keep the consistency check.",
    "problem": "Fluency is undefined.",
    "fix": "Define relevance by the article's key points.",
}
THRESHOLD = 0.2


def _gradient(criteria: tuple[str, ...], parts: dict[str, str], gid: str = "g") -> Gradient:
    return Gradient(gid, "s1", criteria, parts["keep"], parts["problem"], parts["fix"], 1)


class TestProxy:
    def test_shares_count_the_sentences_naming_each_criterion(self) -> None:
        assert focus_shares(_gradient(SUMMEVAL, DILUTED), SUMMEVAL) == {
            "coherence": 0.75,
            "consistency": 0.0,
            "fluency": 0.25,
            "relevance": 0.0,
        }
        assert set(focus_shares(_gradient(SUMMEVAL, FOCUSED), SUMMEVAL).values()) == {0.25}
        own = focus_shares(_gradient(("relevance",), DILUTED), SUMMEVAL)  # a per-criterion gradient is all about it
        assert own == {"coherence": 0.0, "consistency": 0.0, "fluency": 0.0, "relevance": 1.0}
        snake = Gradient("g", "s", ("tone_of_voice", "x"), "The tone of voice is off.", "", "", 1)
        assert focus_shares(snake, ["tone_of_voice", "x"]) == {"tone_of_voice": 1.0, "x": 0.0}

    def test_the_policy_adds_per_criterion_calls_for_the_diluted_criteria_only(self) -> None:
        """After a diluted joint gradient, CCC's loss and gradient stages each add one call per diluted criterion;
        SCC's loss stage adds none (its critiques are per criterion already); before any gradient, and after a
        focused one, the stages route as the preset does."""
        for name, loss_calls in (("CCC", [("consistency",), ("relevance",)]), ("SCC", [])):
            policy = PRESETS[name].model_copy(update={"specificity_fallback": THRESHOLD})
            own = StepArtifacts()
            assert policy.calls("gradient", RoutingState(1, SUMMEVAL, own)) == [SUMMEVAL]
            own.gradients.append(_gradient(SUMMEVAL, DILUTED))
            state = RoutingState(1, SUMMEVAL, own)
            assert policy.diluted(state) == ("consistency", "relevance")
            assert policy.calls("gradient", state) == [("consistency",), ("relevance",)]
            assert policy.calls("loss", state) == loss_calls
            view = policy.view("gradient", ("relevance",), state)
            assert view.visible == ("relevance",) and view.routing == "per_criterion"
            focused = StepArtifacts(gradients=[_gradient(SUMMEVAL, FOCUSED)])
            assert policy.diluted(RoutingState(1, SUMMEVAL, focused)) == ()
        assert PRESETS["CCC"].diluted(state) == ()  # no fallback without the setting
        sss = PRESETS["SSS"].model_copy(update={"specificity_fallback": THRESHOLD})
        assert sss.diluted(state) == ()  # per-criterion gradients: nothing to fall back from


def test_the_budget_counts_the_mitigations_calls_at_most() -> None:
    """A step's estimate adds B·K fallback gradient calls (and B·K loss calls where the loss is joint) and one
    arbiter call per joint optimizer; with one criterion, or per-criterion gradients, nothing."""

    def calls(preset: str, criteria: int = 4, **mitigations: object) -> dict[str, int]:
        policy = PRESETS[preset].model_copy(update=mitigations)
        shape = StepShape(policy, criteria, batch=3, val=5, test=7, models=ModelsConfig(), sample_tokens=100)
        return shape.training(with_test=False).calls

    both = {"specificity_fallback": THRESHOLD, "conflict_arbiter": True}
    for preset, loss in (("CCC", 12), ("SCC", 0)):
        plain, on = calls(preset), calls(preset, **both)
        extra = {stage: on[stage] - plain[stage] for stage in on}
        assert extra == {"judge": 0, "loss": loss, "gradient": 12, "optimizer": 1}
    assert calls("SSS", **both) == calls("SSS")
    assert calls("CCC", 1, **both) == calls("CCC", 1)


class TestAgreement:
    def test_agreement_ranks_planted_ratings(self) -> None:
        """Per step, a joint gradient naming relevance in 0, 1/4, 2/4 or 3/4 of its sentences; ratings that rise
        with it agree (ρ = 1), ratings that fall with it disagree (ρ = -1)."""
        gradients = [
            ("all", s, Gradient(f"g{s}", "x", SUMMEVAL, " ".join(["relevance."] * s + ["other."] * (4 - s)), "", "", 1))
            for s in range(4)
        ]
        rising = [("all", step, "relevance", float(2 + 2 * step)) for step in range(4)]
        assert [p[3] for p in agreement(gradients, rising).pairs] == [0.0, 0.25, 0.5, 0.75]
        assert agreement(gradients, rising).spearman == pytest.approx(1.0)
        falling = [(t, s, c, 10 - r) for t, s, c, r in rising]
        assert agreement(gradients, falling).spearman == pytest.approx(-1.0)
        assert agreement(gradients, rising[:2]).spearman is None  # too few pairs
        assert agreement(gradients, [("all", 9, "relevance", 5.0)]).pairs == ()  # a step with no gradient


def fallback_handler() -> object:
    """The deterministic scripted roles; the joint gradient is DILUTED on the initial prompt and FOCUSED once the
    optimizer has revised it (step 2)."""
    scripted = deterministic_handler()

    def handle(request: RecordedRequest) -> Reply:
        text = request.last_user_text
        if role_of(request) == "gradient" and "all these criteria together" in text:
            return Completion(json.dumps(FOCUSED if "revision" in text else DILUTED))
        return scripted(request)

    return handle


def _routed(run_dir: Path, purpose: str) -> list[tuple[int, str, tuple[str, ...]]]:
    """(step, stage, criteria) of every distinct call made for ``purpose``."""
    with sqlite3.connect(run_dir / "run.sqlite") as db:
        rows = db.execute(
            "SELECT DISTINCT c.request_id, c.step, c.stage, a.criteria FROM calls c JOIN audit a "
            "ON a.request_id = c.request_id WHERE c.purpose = ?",
            (purpose,),
        ).fetchall()
    return sorted((step, stage, tuple(json.loads(criteria))) for _, step, stage, criteria in rows)


def test_a_diluted_joint_gradient_falls_back_for_exactly_its_lost_criteria(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeOpenAI(fallback_handler()) as server:  # type: ignore[arg-type]
        config = write_config(tmp_path / "run.yaml", server.base_url, mode="CCC", specificity_fallback=THRESHOLD)
        run_dir = tmp_path / "run"
        assert main(["optimize", "--config", str(config), "--run-dir", str(run_dir)]) == 0
    lost = [("consistency",), ("relevance",)]
    expected = sorted((1, stage, c) for stage in ("loss", "gradient") for c in lost for _ in range(BATCH))
    assert _routed(run_dir, "fallback") == expected  # step 1 only: step 2's focused gradients brought none
    train = _routed(run_dir, "train")
    for step in (1, 2):  # the step's own calls are CCC's as ever
        assert [s for s in train if s[0] == step and s[1] in ("loss", "gradient")] == [
            (step, stage, SUMMEVAL) for stage in ("gradient", "loss") for _ in range(BATCH)
        ]
    store = RunStore(run_dir)
    focus = store.focus_records()
    fallback_gradients = {g.id for _, step, g in store.gradients() if step == 1 and len(g.criteria) == 1}
    (optimizer,) = [e for e in store.audit_entries() if e.stage == "optimizer" and e.step == 1]
    assert [(step, r.diluted) for _, step, r in focus] == [(1, ("consistency", "relevance"))] * BATCH + [
        (2, ())
    ] * BATCH
    assert len(fallback_gradients) == 2 * BATCH and fallback_gradients <= set(optimizer.artifacts)
    summary = json.loads((run_dir / "summary.json").read_text())["fallback"]
    assert summary["joint_gradients"] == 2 * BATCH and summary["fell_back"] == BATCH
    assert summary["per_criterion"] == {"coherence": 0, "consistency": BATCH, "fluency": 0, "relevance": BATCH}
    assert summary["rate"] == pytest.approx(2 * BATCH / (2 * BATCH * 4))
    assert {stage: cost["calls"] for stage, cost in summary["cost"].items()} == {
        "gradient": 2 * BATCH,
        "loss": 2 * BATCH,
    }
    assert all(cost["prompt_tokens"] > 0 for cost in summary["cost"].values())
    assert main(["report", str(run_dir)]) == 0
    report = (run_dir / "report.md").read_text()
    assert ". Mitigations" in report and f"| 0.25 | {BATCH} of {2 * BATCH} | {4 * BATCH} |" in report
    capsys.readouterr()
    assert main(["audit", str(run_dir)]) == 0
    assert_audited_every_call(capsys.readouterr().out, run_dir)

    assert main(["focus-agreement", str(run_dir)]) != 0  # no evaluator rating yet: refused
    assert "holds no specificity ratings" in capsys.readouterr().err
    assert main(["focus-agreement", str(tmp_path / "none")]) != 0 and not (tmp_path / "none").exists()
    # planted evaluator ratings that rise with the proxy: step 1's proxies are coherence 0.75 (3 of 4 sentences),
    # consistency and relevance 0.5 (the joint gradients' 0 and the fallback gradients' 1), fluency 0.25; step 2's
    # focused gradients 0.25 each
    planted = {(1, "coherence"): 8.0, (1, "consistency"): 6.0, (1, "relevance"): 6.0}
    for step in (1, 2):
        for c in SUMMEVAL:
            store.record_diagnostic(Diagnostic("all", step, c, "specificity", planted.get((step, c), 3.0), 1, "x"))
    store.close()
    assert main(["focus-agreement", str(run_dir)]) == 0
    assert "Spearman rho 1.000 over 8 pairs" in capsys.readouterr().out
