"""The real embedded model (SmolLM2 via llama.cpp) behind the four services, beyond the study: the prefix-shared judge
with length limits, and every mitigation in one run. Structure, never wording. A file of its own so the test workers
share the local-model tests."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from helpers.fake_openai import Completion, FakeOpenAI, Handler, HttpError, RecordedRequest, Reply
from helpers.runs import assert_audited_every_call
from helpers.scripts import role_of
from helpers.text import common_prefix

from judgeopt.cli import main
from judgeopt.core.local_model import LocalModelServer
from judgeopt.core.tokens import approx_tokens

K = 4
"""SummEval's criteria: a prefix-shared judge makes one model call for each."""


@dataclass(frozen=True)
class Exchange:
    """One chat request the local model answered through the recording proxy, with its reply and its time."""

    request: RecordedRequest
    reply: str
    seconds: float


def recording_proxy(base_url: str, exchanges: list[Exchange]) -> Handler:
    """A scripted-endpoint handler that forwards every request to the model at ``base_url`` unchanged and answers
    with its reply, keeping each exchange: the requests as the judge and the optimizer sent them, byte for byte."""
    client = httpx.Client(base_url=base_url, timeout=600)
    lock = threading.Lock()

    def forward(request: RecordedRequest) -> Reply:
        started = time.perf_counter()
        response = client.post("/chat/completions", json=request.body)
        seconds = time.perf_counter() - started
        if response.status_code != 200:
            return HttpError(response.status_code, response.text[:200])
        body = response.json()
        choice, usage = body["choices"][0], body.get("usage") or {}
        content = choice["message"].get("content") or ""
        with lock:
            exchanges.append(Exchange(request, content, seconds))
        return Completion(
            content,
            prompt_tokens=usage.get("prompt_tokens", 0),
            completion_tokens=usage.get("completion_tokens", 0),
            finish_reason=choice.get("finish_reason") or "stop",
        )

    return forward


def proposed_instructions(reply: str) -> dict[str, str]:
    """The instructions a joint optimizer reply proposes ({} when it is not the JSON asked for)."""
    try:
        answer = json.loads(reply)
    except ValueError:
        return {}
    instructions = answer.get("instructions") if isinstance(answer, dict) else None
    return {k: v for k, v in instructions.items() if isinstance(v, str)} if isinstance(instructions, dict) else {}


class TestLocalModelPrefixSharedAndLengthLimits:
    LIMIT = 5
    """Tokens: shorter than any instruction the model is likely to write, so the limit is met and acted on."""

    @pytest.mark.timeout(900)
    def test_prefix_shared_judge_and_length_limit_on_the_local_model(
        self, local_llm: LocalModelServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """One CCC step, judge routing and length limit from the command line. Each judge RPC is K model calls
        whose messages share byte for byte everything up to and including the sample and differ only in the one
        criterion that ends them; the optimizer's request states the limit for every criterion, a proposal over it
        is asked for again, and what the run keeps is either within the limit, verbatim from a reply (never cut),
        or the previous instruction with the criterion recorded as rejected. Seconds per call are measured."""
        exchanges: list[Exchange] = []
        with FakeOpenAI(recording_proxy(local_llm.base_url, exchanges)) as proxy:
            config = tmp_path / "run.yaml"
            models = {
                "default": {
                    "base_url": proxy.base_url,
                    "model": local_llm.model_name,
                    "max_retries": 0,
                    "timeout": 600,
                },
                "judge": {"max_tokens": 16, "structured_output": "json_object_schema"},
                "loss": {"max_tokens": 48},
                "gradient": {"max_tokens": 96},
                "optimizer": {"max_tokens": 160, "structured_output": "json_object_schema"},
            }
            dataset = {"name": "summeval", "train_size": 8, "val_size": 1, "test_size": 1}
            run = {"mode": "CCC", "steps": 1, "batch_size": 1, "gate": "none", "concurrency": 1, "dataset": dataset}
            config.write_text(yaml.safe_dump({"models": models, "run": {**run, "bootstrap_resamples": 0}}))
            run_dir = tmp_path / "run"
            flags = ["--judge-routing", "prefix_shared", "--instruction-max-tokens", str(self.LIMIT)]
            assert main(["optimize", "--config", str(config), "--run-dir", str(run_dir), *flags]) == 0
        summary = json.loads((run_dir / "summary.json").read_text())
        criteria = summary["criteria"]
        assert len(criteria) == K and summary["status"] == "complete"
        assert {"judge_routing", "instruction_max_tokens"} <= set(summary["differs_from_study"])

        # The judge: K model calls per RPC, sharing the bytes up to the sample, each ending with its own criterion.
        with sqlite3.connect(run_dir / "run.sqlite") as db:
            judge_rpcs = db.execute("SELECT llm_calls, endpoint_seconds FROM calls WHERE stage = 'judge'").fetchall()
            optimizer_rpcs = [n for (n,) in db.execute("SELECT llm_calls FROM calls WHERE stage = 'optimizer'")]
        assert judge_rpcs and all(calls == K and seconds > 0 for calls, seconds in judge_rpcs)
        judged = [e for e in exchanges if role_of(e.request) == "judge"]
        assert len(judged) == K * len(judge_rpcs)  # concurrency 1: each RPC's K calls arrive together
        first_seconds, rest_seconds = [], []
        for start in range(0, len(judged), K):
            group = judged[start : start + K]
            systems = {e.request.system_text for e in group}
            users = [e.request.last_user_text for e in group]
            shared = common_prefix(users)
            assert len(systems) == 1 and "</sample>" in shared
            endings = [text[len(shared) :] for text in users]
            named = [[c for c in criteria if c in ending] for ending in endings]
            assert sorted(n[0] for n in named if len(n) == 1) == sorted(criteria), named
            first_seconds.append(group[0].seconds)
            rest_seconds += [e.seconds for e in group[1:]]
        print(f"judge call seconds: first of a row {sorted(first_seconds)}, the others {sorted(rest_seconds)}")

        # The optimizer: the limit stated, a long proposal asked for again, nothing cut.
        optimized = [e for e in exchanges if role_of(e.request) == "optimizer"]
        asked_again = [e for e in optimized if "Your previous answer was too long" in e.request.last_user_text]
        first_asks = [e for e in optimized if e not in asked_again]
        assert first_asks and optimizer_rpcs == [1 + len(asked_again)]
        for exchange in first_asks:
            for criterion in criteria:
                assert f'"{criterion}": at most {self.LIMIT}' in exchange.request.last_user_text
        over = [c for c, text in proposed_instructions(first_asks[0].reply).items() if approx_tokens(text) > self.LIMIT]
        assert asked_again or not over, over  # a proposal over the limit is asked for again
        assert asked_again, "the model kept every instruction within the limit: nothing was enforced"
        initial = dict.fromkeys(criteria, "Rate from 1 to 5.")
        with sqlite3.connect(run_dir / "run.sqlite") as db:
            (candidate,) = db.execute("SELECT candidate_id FROM steps WHERE step = 1").fetchone()
            body = db.execute("SELECT body FROM prompts WHERE id = ?", (candidate,)).fetchone() if candidate else None
        kept = dict(json.loads(body[0])["instructions"]) if body else initial
        rejected = set(summary["steps"][1]["length_rejected"])
        for criterion, text in kept.items():
            if criterion in rejected:
                assert text == initial[criterion]  # refused: the previous instruction stays
            elif text != initial[criterion]:
                assert approx_tokens(text) <= self.LIMIT, (criterion, text)
                # The model's own words as the tolerant parser read them (a repaired near-JSON value need not be a
                # whole JSON string); that a too-long one is refused, never cut, is the unit tests' business.
                assert any(text in e.reply for e in optimized), (criterion, text)


class TestLocalModelMitigations:
    @pytest.mark.timeout(600)
    def test_every_mitigation_in_one_scc_run(
        self, local_llm: LocalModelServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """One SCC step with the Pareto gate, the specificity fallback (threshold 1: any joint gradient that does
        not name every criterion in every sentence falls back), the conflict arbiter and archive recombination, at
        tiny sizes: the run passes its audit, the archive has a member, the fallback's and the arbiter's calls are
        in the calls table under their purposes, and the summary has every mitigation's field."""
        config = tmp_path / "run.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "models": {
                        "default": {
                            "base_url": local_llm.base_url,
                            "model": local_llm.model_name,
                            "structured_output": "json_object_schema",
                            "timeout": 300,  # a loaded machine slows the model; the assertions stay structural
                        },
                        "loss": {"max_tokens": 128},  # a critique cut off is unusable: no gradient would follow
                        "gradient": {"max_tokens": 256},  # room for a joint gradient that parses
                        "optimizer": {"max_tokens": 96},
                        "judge": {"max_tokens": 48},
                    },
                    "run": {
                        "mode": "SCC",
                        "steps": 1,
                        "batch_size": 2,
                        "gate": "pareto",
                        "gate_epsilon": 0.5,
                        "specificity_fallback": 1.0,
                        "conflict_arbiter": True,
                        "archive_recombine": True,
                        "concurrency": 1,
                        "bootstrap_resamples": 0,
                        "dataset": {"name": "summeval", "train_size": 6, "val_size": 2, "test_size": 2},
                    },
                }
            )
        )
        run_dir = tmp_path / "run"
        assert main(["optimize", "--config", str(config), "--run-dir", str(run_dir)]) == 0
        capsys.readouterr()
        assert main(["audit", str(run_dir)]) == 0
        assert_audited_every_call(capsys.readouterr().out, run_dir)
        with sqlite3.connect(run_dir / "run.sqlite") as db:
            rows = db.execute("SELECT stage || ':' || purpose, COUNT(DISTINCT request_id) FROM calls GROUP BY 1")
            purposes = dict(rows.fetchall())
        assert purposes.get("gradient:fallback", 0) >= 1, purposes
        assert purposes.get("optimizer:arbiter", 0) == 1, purposes
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] == "complete"
        assert len(summary["archive"]["all"]["members"]) >= 1
        assert summary["fallback"]["joint_gradients"] >= 1 and summary["fallback"]["cost"]
        assert summary["conflicts"]["cost"]
        recombination = summary["recombination"]["all"]
        assert "skipped" in recombination or recombination["step"] == 2
        assert {"archive_recombine", "gate"} <= set(summary["differs_from_study"])
