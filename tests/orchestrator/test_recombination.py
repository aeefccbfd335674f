"""Archive recombination and the archive under a scalar gate: the stitching rule on planted archives, and scripted
SCC runs under the MAE gate where two accepted steps each improve different criteria, so the archive holds both;
the prompt stitched from them is validated as a whole, joins the archive when the gate admits it, and is refused
(its stitching loss recorded) when the instructions interfere once put side by side."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from helpers.fake_openai import Completion, RecordedRequest, Reply
from helpers.runs import scripted_run
from helpers.scripts import SUMMEVAL, deterministic_handler, role_of

from judgeopt.cli import main
from judgeopt.orchestrator.engine.artifacts import PromptState
from judgeopt.orchestrator.engine.pareto import ArchiveMember
from judgeopt.orchestrator.engine.recombine import best_members, recombine, stitching

NAMES = ["clarity", "accuracy", "tone"]


def _prompt(tag: str) -> PromptState:
    return PromptState("Judge the text.", tuple((n, f"{n} as in {tag}") for n in NAMES))


class TestStitchingRule:
    def test_each_criterion_comes_from_the_member_best_on_it(self) -> None:
        archive = [
            ArchiveMember(1, "p1", {"clarity": -0.2, "accuracy": -1.0, "tone": -0.5}),
            ArchiveMember(3, "p3", {"clarity": -0.9, "accuracy": -0.1, "tone": -0.5}),  # ties with 1 on tone
        ]
        held = {1: _prompt("one"), 3: _prompt("three")}
        stitched = recombine(_prompt("current"), held, archive, NAMES)
        assert stitched is not None
        assert stitched.sources == {"clarity": 1, "accuracy": 3, "tone": 1}  # a tie goes to the earliest step
        assert dict(stitched.prompt.instructions) == {
            "clarity": "clarity as in one",
            "accuracy": "accuracy as in three",
            "tone": "tone as in one",
        }
        assert stitched.prompt.task_description == "Judge the text."

    def test_nothing_to_stitch_when_one_member_is_best_everywhere_or_the_archive_is_empty(self) -> None:
        archive = [
            ArchiveMember(2, "p2", {"clarity": -0.1, "accuracy": -0.1, "tone": -0.1}),
            ArchiveMember(4, "p4", {"clarity": -0.5, "accuracy": -0.1, "tone": -0.9}),
        ]
        assert recombine(_prompt("c"), {2: _prompt("two"), 4: _prompt("four")}, archive, NAMES) is None
        assert recombine(_prompt("c"), {}, [], NAMES) is None
        with pytest.raises(ValueError, match="empty archive"):
            best_members([], NAMES)

    def test_the_stitching_loss_is_the_source_rho_minus_the_stitched_one(self) -> None:
        sources, stitched = {"clarity": 1, "accuracy": 3}, {"clarity": 0.5, "accuracy": 0.7}
        losses = stitching(sources, {1: {"clarity": 0.6}, 3: {"accuracy": 0.4}}, stitched)
        expected = {"source_step": 1, "source_rho": 0.6, "stitched_rho": 0.5, "loss": pytest.approx(0.1)}
        assert losses["clarity"] == expected
        assert losses["accuracy"]["loss"] == pytest.approx(-0.3)


GOOD = {"coherence": 3, "consistency": 5, "fluency": 5, "relevance": 4}
"""Close to SummEval's expert ratings (consistency and fluency high, coherence and relevance mid-scale); 1 is far."""
PLAN = {1: {"coherence"}, 2: {"consistency", "fluency", "relevance"}}
"""Per optimizer call (one per step in SCC), the criteria whose new instruction carries that step's good mark:
step 2 beats step 1 on macro MAE (the MAE gate accepts it) but loses coherence, so neither dominates the other."""


def marking_handler(*, interfere: bool) -> Any:
    """The judge scores a criterion GOOD when the prompt carries a good mark naming it, else 1; with ``interfere``,
    a prompt holding marks of both steps (only a stitched one does) gets 1 everywhere. The joint optimizer's k-th
    call marks the criteria of ``PLAN[k]``."""
    scripted = deterministic_handler()
    optimizer_calls = 0

    def handle(request: RecordedRequest) -> Reply:
        nonlocal optimizer_calls
        role, text = role_of(request), request.last_user_text
        if role == "judge":
            stitched = interfere and "ZZGOOD1" in text and "ZZGOOD2" in text
            scores = {c: GOOD[c] if re.search(rf"ZZGOOD\d{c}", text) and not stitched else 1 for c in SUMMEVAL}
            return Completion(json.dumps(scores), prompt_tokens=60, completion_tokens=8)
        if role == "optimizer":
            optimizer_calls += 1
            marked = PLAN.get(optimizer_calls, set())
            mark = f" ZZGOOD{optimizer_calls}"
            new = {c: f"Rate {c} from 1 to 5." + (f"{mark}{c}" if c in marked else "") for c in SUMMEVAL}
            return Completion(json.dumps({"instructions": new}))
        return scripted(request)

    return handle


def _steps(run_dir: Path) -> dict[int, tuple[str, dict[str, Any], dict[str, Any] | None, str, str | None]]:
    with sqlite3.connect(run_dir / "run.sqlite") as db:
        rows = db.execute("SELECT step, status, val, test, prompt_id, candidate_id FROM steps ORDER BY step").fetchall()
        prompts = {pid: json.loads(body) for pid, body in db.execute("SELECT id, body FROM prompts")}
    return {
        step: (status, json.loads(val), json.loads(test) if test else None, prompts[pid], prompts.get(cid))
        for step, status, val, test, pid, cid in rows
    }


@pytest.mark.parametrize("interfere", [False, True], ids=["compatible", "interfering"])
def test_the_stitched_prompt_is_validated_as_a_whole_and_joins_the_archive_only_if_the_gate_admits_it(
    tmp_path: Path, interfere: bool
) -> None:
    """Steps 1 and 2 are accepted by the MAE gate and the archive (kept under a scalar gate) holds both. Step 3 is
    the recombination: coherence's instruction from step 1, the others from step 2, one validation scoring. Its
    figures name each criterion's source and its ρ there and stitched. Compatible instructions: accepted, tested,
    and it dominates the archive. Interfering ones: refused by the gate, untested, and the archive is unchanged."""
    run = scripted_run(tmp_path, marking_handler(interfere=interfere), mode="SCC", gate="mae", archive_recombine=True)
    assert run.code == 0
    steps = _steps(run.run_dir)
    assert sorted(steps) == [0, 1, 2, 3]
    assert [steps[s][0] for s in (1, 2)] == ["accepted", "accepted"]
    status, val, test, held, candidate = steps[3]
    assert candidate is not None
    recombination = val["recombination"]
    assert recombination["sources"] == {"coherence": 1, "consistency": 2, "fluency": 2, "relevance": 2}
    for criterion, source in recombination["sources"].items():
        assert candidate["instructions"][criterion] == steps[source][3]["instructions"][criterion]
        entry = recombination["stitching"][criterion]
        stitched_rho = (val if status == "accepted" else val["candidate"])["rho"][criterion]
        assert entry["source_rho"] == steps[source][1]["rho"][criterion]
        assert entry["stitched_rho"] == stitched_rho
        assert entry["loss"] == pytest.approx(entry["source_rho"] - stitched_rho)
    with sqlite3.connect(run.run_dir / "run.sqlite") as db:
        validations = db.execute("SELECT COUNT(DISTINCT request_id) FROM calls WHERE step = 3 AND purpose = 'val'")
        assert validations.fetchone()[0] == 4  # one validation scoring: a judge call per validation row
        assert db.execute("SELECT COUNT(*) FROM calls WHERE step = 3 AND purpose = 'train'").fetchone()[0] == 0
    summary = json.loads((run.run_dir / "summary.json").read_text())
    assert "archive_recombine" in summary["differs_from_study"]
    members = [m["step"] for m in summary["archive"]["all"]["members"]]
    reported = summary["recombination"]["all"]
    assert reported["step"] == 3 and reported["sources"] == recombination["sources"]
    assert main(["report", str(run.run_dir)]) == 0
    mitigations = (run.run_dir / "report.md").read_text().split(". Mitigations", 1)[1]
    (row,) = [line for line in mitigations.splitlines() if f"| all: {status}" in line]  # the run's one row
    worst = max(recombination["stitching"].values(), key=lambda e: e["loss"])["loss"]
    assert f"| all: {worst:+.3f} (" in row
    if interfere:
        assert status == "rejected" and test is None and held == steps[2][3]
        assert candidate["instructions"] != held["instructions"]
        assert members == [1, 2] and reported["in_archive"] is False
        assert val["candidate"]["mae"]["fluency"] > steps[2][1]["mae"]["fluency"]  # the stitching hurt fluency
    else:
        assert status == "accepted" and test is not None and held == candidate
        assert members == [3] and reported["in_archive"] is True
        assert summary["archive"]["all"]["members"][0]["recombined"] is True
        assert all(val["mae"][c] <= steps[s][1]["mae"][c] for c, s in recombination["sources"].items())
