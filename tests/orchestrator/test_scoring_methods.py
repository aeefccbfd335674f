"""The run's count of the judge's scores by method, and its one warning when logprob weighting was not applied."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from judgeopt.orchestrator.engine.scoring import count_scoring_methods
from judgeopt.orchestrator.engine.store import RunStore
from judgeopt.v1 import common_pb2

WEIGHTED = common_pb2.SCORING_METHOD_LOGPROB_WEIGHTED
SAMPLED = common_pb2.SCORING_METHOD_SAMPLED


def prediction(*methods: int, missing: int = 0) -> common_pb2.Prediction:
    scores = [common_pb2.CriterionScore(criterion=f"c{i}", value=3.0, method=m) for i, m in enumerate(methods)]
    scores += [common_pb2.CriterionScore(criterion=f"m{i}") for i in range(missing)]  # no value: not counted
    return common_pb2.Prediction(sample_id="s", scores=scores)


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / "run")


def warnings(logs: list[dict[str, object]]) -> list[dict[str, object]]:
    return [entry for entry in logs if entry["event"] == "judge.logprob_weighting_not_applied"]


def test_counts_add_up_over_batches_and_leave_out_unscored_criteria(store: RunStore) -> None:
    count_scoring_methods(store, [prediction(WEIGHTED, SAMPLED, missing=2)], weighting_asked=True)
    count_scoring_methods(store, [prediction(WEIGHTED, WEIGHTED), prediction(SAMPLED)], weighting_asked=True)
    assert store.scoring_methods() == {"logprob_weighted": 3, "sampled": 2}


def test_warns_once_per_run_when_weighting_was_asked_and_a_score_came_back_sampled(store: RunStore) -> None:
    with capture_logs() as logs:
        count_scoring_methods(store, [prediction(WEIGHTED)], weighting_asked=True)
        count_scoring_methods(store, [prediction(SAMPLED, WEIGHTED)], weighting_asked=True)
        count_scoring_methods(store, [prediction(SAMPLED)], weighting_asked=True)
    assert [(w["sampled"], w["weighted"]) for w in warnings(logs)] == [(1, 1)]


def test_no_warning_when_weighting_was_not_asked(store: RunStore) -> None:
    with capture_logs() as logs:
        count_scoring_methods(store, [prediction(SAMPLED, SAMPLED)], weighting_asked=False)
    assert warnings(logs) == [] and store.scoring_methods() == {"sampled": 2}
