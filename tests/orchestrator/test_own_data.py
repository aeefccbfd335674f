"""Own data without friction: `judgeopt init` writes a config from a data file's columns, and the errors of a file
dataset say what to set and where."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from judgeopt.cli import main
from judgeopt.core.errors import ConfigError
from judgeopt.orchestrator.config import load_config
from judgeopt.orchestrator.data.loading import load_dataset
from judgeopt.orchestrator.data.records import CriterionSpec, DatasetConfig, Record
from judgeopt.orchestrator.engine.artifacts import ScoredSample
from judgeopt.orchestrator.engine.scoring import evaluation_of
from judgeopt.orchestrator.errors import DataError

REVIEWS = Path(__file__).resolve().parents[2] / "examples" / "code_review" / "reviews.csv"


def test_init_infers_the_examples_layout_and_its_config_loads(tmp_path: Path) -> None:
    """On the code-review example: the same text fields, id, group and scales as its hand-written config; the
    written config loads and its dataset validates every row."""
    out = tmp_path / "conf" / "judgeopt.yaml"
    out.parent.mkdir()
    assert main(["init", str(REVIEWS), "--out", str(out)]) == 0
    text = out.read_text()
    assert text.count("CHECK") >= 4 and text.startswith("#")
    dataset = load_config(out).run.dataset
    assert dataset.text_fields == ("change", "comment")
    assert (dataset.id_field, dataset.group_field) == ("id", "change")
    scales = {c.name: (c.min_score, c.max_score, c.integer_scores) for c in dataset.criteria}
    assert scales == {"correctness": (0, 1, False), "clarity": (1, 3, True), "actionability": (1, 5, True)}
    assert len(load_dataset(dataset).records) == 40
    assert main(["init", str(REVIEWS), "--out", str(out)]) == 2  # never replaces a file


def test_init_reads_averaged_labels_as_not_whole(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Labels 2 to 4.67 in thirds: not whole numbers, on the smallest common scale holding them, 1-5."""
    rows = [{"text": f"answer {i}", "quality": 2 + (i % 9) / 3} for i in range(12)]
    data = tmp_path / "own.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert main(["init", str(data)]) == 0
    out = capsys.readouterr().out
    assert "integer_scores: false" in out and "min_score: 1\n" in out and "max_score: 5" in out


def test_init_without_labels_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "texts.csv"
    data.write_text("text\nhello\nworld\n")
    assert main(["init", str(data)]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no column of numbers" in err


def test_a_file_dataset_without_settings_points_to_init_and_the_section(tmp_path: Path) -> None:
    with pytest.raises(DataError) as caught:
        load_dataset(DatasetConfig(name="file", path=REVIEWS))
    message = str(caught.value)
    assert "needs text_fields, criteria" in message and "run.dataset" in message and "judgeopt init" in message


@pytest.mark.parametrize(
    ("criterion", "fragments"),
    [
        (CriterionSpec(name="clarity", max_score=2), ("outside the range 1-2 of criterion 'clarity'", "1 and 5")),
        (CriterionSpec(name="correctness", min_score=0, max_score=1), ("not a whole number", "integer_scores: false")),
    ],
    ids=["range", "whole-numbers"],
)
def test_label_errors_name_the_criterion_and_its_defaults(criterion: CriterionSpec, fragments: tuple[str, ...]) -> None:
    config = DatasetConfig(name="file", path=REVIEWS, text_fields=("comment",), criteria=(criterion,))
    with pytest.raises(DataError) as caught:
        load_dataset(config)
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_criteria_flag_picks_from_a_full_config(capsys: pytest.CaptureFixture[str]) -> None:
    """--criteria chooses among the config's criteria (their instructions for the others are dropped, not an
    error); a name the config lacks is one line naming the config's criteria."""
    config = str(REVIEWS.with_name("judgeopt.yaml"))
    assert main(["optimize", "--config", config, "--criteria", "clarity,actionability", "--dry-run"]) == 0
    capsys.readouterr()
    assert main(["optimize", "--config", config, "--criteria", "clarity,nope", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "ConfigError: --criteria: unknown criterion 'nope'; the config's: correctness, clarity, actionability"


def test_labels_nested_in_json_are_found_by_name(tmp_path: Path) -> None:
    """``{"scores": {...}}``: init names the criteria by their keys, and the loader finds each label there; a text
    field may be a dotted path."""
    rows = [
        {
            "item": {"question": f"question {i}?", "answer": f"answer number {i}"},
            "scores": {"helpful": 1 + i % 5, "safe": i % 2},
        }
        for i in range(10)
    ]
    data = tmp_path / "nested.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "judgeopt.yaml"
    assert main(["init", str(data), "--out", str(out)]) == 0
    dataset = load_config(out).run.dataset
    assert [c.name for c in dataset.criteria] == ["helpful", "safe"]
    assert set(dataset.text_fields) == {"item.question", "item.answer"}
    records = load_dataset(dataset).records
    assert len(records) == 10
    assert [r.labels for r in records[:2]] == [{"helpful": 1.0, "safe": 0.0}, {"helpful": 2.0, "safe": 1.0}]
    assert dict(records[1].fields)["item.answer"] == "answer number 1"


def test_a_criterion_error_names_the_criterion_not_its_index(tmp_path: Path) -> None:
    criteria = [{"name": f"c{i}"} for i in range(5)] + [{"name": "fluency", "max_score": "high"}]
    config = tmp_path / "bad.yaml"
    config.write_text(json.dumps({"run": {"dataset": {"name": "file", "criteria": criteria}}}))
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert "run.dataset.criteria[fluency].max_score" in str(caught.value)
    assert "criteria.5" not in str(caught.value)


def test_off_by_one_scales_with_a_continuous_scale() -> None:
    """On 0-1 continuous labels, predictions 0.5 away are not 'off by at most one' (a quarter of the range is the
    width); on a whole-number 1-3 scale one point still is."""
    correctness = CriterionSpec(name="correctness", min_score=0, max_score=1, integer_scores=False)
    clarity = CriterionSpec(name="clarity", min_score=1, max_score=3)
    records = [
        Record(id=f"r{i}", fields=(("text", "t"),), labels={"correctness": truth, "clarity": 2.0}, group=f"r{i}")
        for i, truth in enumerate([0.0, 0.5, 1.0, 0.25])
    ]
    predictions = [(0.5, 3.0), (0.5, 1.0), (0.5, 2.0), (0.25, 3.0)]
    scored = [
        ScoredSample(r.id, {"correctness": c, "clarity": k}, {}, "")
        for r, (c, k) in zip(records, predictions, strict=True)
    ]
    evaluation = evaluation_of((correctness, clarity), records, scored, 0, 0)
    assert evaluation.per_criterion["correctness"].off_by_one == pytest.approx(0.5)  # 0.5 and 0.0 away: 2 of 4
    assert evaluation.per_criterion["clarity"].off_by_one == pytest.approx(1.0)
