"""OpenTelemetry traces: a real `judgeopt optimize` (its own process, four service processes, a scripted endpoint)
exports to a local OTLP/HTTP collector, and one trace goes orchestrator call span → gRPC client span → service
server span → the model's HTTP span; with no ``OTEL_*`` variable nothing of opentelemetry is even imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.fake_openai import FakeOpenAI, RecordedRequest
from helpers.otlp_collector import CollectedSpan, OtlpCollector
from helpers.runs import write_config
from helpers.scripts import deterministic_handler
from structlog.testing import capture_logs

from judgeopt.cli import main
from judgeopt.core import tracing

ROLES = ("judge", "loss", "gradient", "optimizer")
SMALL = {"name": "summeval", "train_size": 4, "val_size": 2, "test_size": 2}


def untraced_environment() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if not name.startswith("OTEL_")}


def http_method(span: CollectedSpan) -> str | None:
    """The method of an HTTP client span, under the stable or the older semantic conventions."""
    method = span.attributes.get("http.request.method", span.attributes.get("http.method"))
    return None if method is None else str(method)


class Traced:
    """The spans of one traced run, with the links between them."""

    def __init__(self, spans: list[CollectedSpan]) -> None:
        self.spans = spans
        self.by_id = {(s.trace_id, s.span_id): s for s in spans}

    def parent(self, span: CollectedSpan) -> CollectedSpan | None:
        return None if span.parent_id is None else self.by_id.get((span.trace_id, span.parent_id))

    def ancestors(self, span: CollectedSpan) -> Iterator[CollectedSpan]:
        while (found := self.parent(span)) is not None:
            yield found
            span = found

    def named(self, prefix: str, service: str = "judgeopt") -> list[CollectedSpan]:
        return [s for s in self.spans if s.service == service and s.name.startswith(prefix)]

    def model_chain(self, role: str) -> tuple[CollectedSpan, ...] | None:
        """A model HTTP span of ``role``'s service whose ancestors include that service's server span, whose parent is
        the orchestrator's gRPC client span, whose parent is the orchestrator's ``call <role>`` span."""
        for http in self.spans:
            if http.service != f"judgeopt-{role}" or http.kind != "CLIENT" or http_method(http) is None:
                continue
            server = next((a for a in self.ancestors(http) if a.kind == "SERVER"), None)
            client = self.parent(server) if server is not None else None
            call = self.parent(client) if client is not None else None
            if (
                server is not None
                and server.service == f"judgeopt-{role}"
                and client is not None
                and (client.service, client.kind, client.name) == ("judgeopt", "CLIENT", server.name)
                and call is not None
                and (call.service, call.name) == ("judgeopt", f"call {role}")
            ):
                return call, client, server, http
        return None


@pytest.fixture(scope="module")
def traced_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Traced, list[RecordedRequest]]:
    """One CCC step on a small split, traced to a local collector: every span the five processes exported."""
    tmp = tmp_path_factory.mktemp("traced")
    with OtlpCollector() as collector, FakeOpenAI(deterministic_handler()) as endpoint:
        config = write_config(tmp / "run.yaml", endpoint.base_url, mode="CCC", steps=1, batch_size=1, dataset=SMALL)
        environment = {
            **untraced_environment(),
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "200",
        }
        done = subprocess.run(
            [sys.executable, "-m", "judgeopt", "optimize", "--config", str(config), "--run-dir", str(tmp / "run")],
            env=environment,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return Traced(collector.spans()), list(endpoint.requests)


def test_one_trace_goes_from_the_orchestrators_call_to_the_services_model_request(
    traced_run: tuple[Traced, list[RecordedRequest]],
) -> None:
    traced, _ = traced_run
    services = Counter(s.service for s in traced.spans)
    assert set(services) == {"judgeopt", *(f"judgeopt-{role}" for role in ROLES)}, services
    for role in ROLES:
        chain = traced.model_chain(role)
        assert chain is not None, f"no trace links a {role} call to its model request"
        assert len({s.trace_id for s in chain}) == 1
        call, _, server, http = chain
        assert server.name.startswith("/judgeopt.v1.") and http_method(http) == "POST"
        assert call.attributes["judgeopt.role"] == role and call.attributes["judgeopt.status"] == "ok"


def test_the_orchestrators_spans_nest_run_step_stage_call(traced_run: tuple[Traced, list[RecordedRequest]]) -> None:
    traced, _ = traced_run
    (run,) = traced.named("run")
    assert run.parent_id is None and run.attributes["judgeopt.mode"] == "CCC"
    steps = traced.named("step")
    assert sorted(s.attributes["judgeopt.step"] for s in steps) == [0, 1]
    assert all(traced.parent(s) == run for s in steps)
    stages = traced.named("stage ")
    assert {s.name for s in stages} == {"stage evaluate", "stage learn", "stage optimize"}
    assert all(traced.parent(s) in steps for s in stages)
    calls = traced.named("call ")
    # 2 val + 2 test judge calls at step 0; at step 1 one training chain, 2 val and 2 test
    assert Counter(c.attributes["judgeopt.role"] for c in calls) == {
        "judge": 9,
        "loss": 1,
        "gradient": 1,
        "optimizer": 1,
    }
    for call in calls:
        stage = traced.parent(call)
        assert stage in stages, call.name
        assert call.attributes["judgeopt.step"] == stage.attributes["judgeopt.step"]
        assert call.attributes["judgeopt.mode"] == "CCC" and call.attributes["judgeopt.criteria"]
        assert call.attributes["judgeopt.prompt_tokens"] > 0 and call.attributes["judgeopt.attempts"] == 1
        assert call.attributes["judgeopt.purpose"] in ("val", "test", "train")
        assert "judgeopt.cached_prompt_tokens" in call.attributes


def test_no_span_carries_what_the_model_was_shown(traced_run: tuple[Traced, list[RecordedRequest]]) -> None:
    traced, requests = traced_run
    prompts = [f"{r.system_text}\n{r.last_user_text}" for r in requests]
    texts = [v for s in traced.spans for v in s.attributes.values() if isinstance(v, str) and len(v) >= 40]
    assert len(prompts) == 12 and texts  # the URLs of the model requests, at least
    assert [t for t in texts if any(t in p for p in prompts)] == []


def test_without_otel_variables_nothing_of_opentelemetry_is_imported(tmp_path: Path) -> None:
    """The default path (and a disabled SDK) stays free: clients, spans and the command line load no opentelemetry."""
    probe = """
import asyncio, json, sys
from judgeopt.cli import main
from judgeopt.core.tracing import span, tracing
from judgeopt.orchestrator.agent_clients import AgentClients
from judgeopt.orchestrator.engine import run

async def clients() -> None:
    async with AgentClients({"judge": "127.0.0.1:9"}):
        pass

with tracing("judgeopt"), span("run", step=1) as traced:
    traced.set(status="ok")
    asyncio.run(clients())
assert main(["config", "schema"]) == 0
print(json.dumps(sorted(m for m in sys.modules if m.startswith("opentelemetry"))), file=sys.stderr)
"""
    for extra in ({}, {"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}):
        done = subprocess.run(
            [sys.executable, "-c", probe], env={**untraced_environment(), **extra}, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert json.loads(done.stderr.strip().splitlines()[-1]) == [], extra


@pytest.mark.parametrize(
    ("environment", "asked"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "x"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, False),
        ({"OTEL_SDK_DISABLED": "TRUE", "OTEL_TRACES_EXPORTER": "otlp"}, False),
    ],
)
def test_which_variables_ask_for_traces(environment: dict[str, str], asked: bool) -> None:
    assert tracing.requested(environment) is asked


def test_each_started_service_gets_the_environment_under_its_own_name() -> None:
    parent = {"OTEL_SERVICE_NAME": "exp-7", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "PATH": "/bin"}
    assert tracing.service_environment("judge", parent) == {**parent, "OTEL_SERVICE_NAME": "exp-7-judge"}
    assert tracing.service_environment("loss", {"PATH": "/bin"}) == {"PATH": "/bin"}


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("OTEL_TRACES_EXPORTER", "zipkin", "OTEL_TRACES_EXPORTER asks for the 'zipkin' trace exporter, which is not"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL='http/json' is not a"),
    ],
)
def test_an_exporter_that_cannot_be_had_is_one_line_naming_the_variable(
    variable: str, value: str, said: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")  # asks for traces
    monkeypatch.setenv(variable, value)
    assert main(["config", "schema"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"ConfigError: {said}"), line


def test_traces_asked_for_without_the_extra_warn_once_and_run_untraced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # importing it now raises ImportError
    with capture_logs() as logs, tracing.tracing("judgeopt"), tracing.span("run") as traced:
        traced.set(step=1)
        assert tracing.grpc_client_interceptors() == [] and tracing.grpc_server_interceptors() == []
    assert [(e["event"], e["log_level"]) for e in logs] == [("tracing.unavailable", "warning")]
    assert "judgeopt[otel]" in logs[0]["reason"]
