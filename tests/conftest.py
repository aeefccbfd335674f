"""Shared fixtures: the scripted OpenAI endpoint, agent services as separate processes, the real local model."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import structlog
from helpers.fake_openai import FakeOpenAI
from helpers.scripts import agent_roles_handler, fake_models

from judgeopt.core.local_model import LocalModelServer
from judgeopt.orchestrator.agent_clients import AgentClients
from judgeopt.orchestrator.fleet import ServiceFleet

REPO_ROOT = Path(__file__).resolve().parent.parent


LONGEST_FIRST = ("tests/e2e/", "tests/faults/")
"""Files whose tests run for minutes (the real local model, whole runs killed and resumed)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest files first: on two workers (``-n 2 --dist loadfile --no-loadscope-reorder``, which keeps this
    order instead of putting the files with most tests first) they then overlap the many short files instead of
    ending the suite alone. The order is the same in every worker, as xdist requires."""
    items.sort(key=lambda item: not item.nodeid.startswith(LONGEST_FIRST))


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


@pytest.fixture(scope="module")
def fake_endpoint() -> Iterator[FakeOpenAI]:
    """A scripted OpenAI-compatible endpoint (real HTTP on 127.0.0.1), one per test module."""
    with FakeOpenAI(agent_roles_handler()) as server:
        yield server


@pytest.fixture
def endpoint(fake_endpoint: FakeOpenAI) -> Iterator[FakeOpenAI]:
    """The module's fake endpoint, reset to the well-behaved script and an empty request log for each test."""
    fake_endpoint.set_handler(agent_roles_handler())
    fake_endpoint.clear()
    yield fake_endpoint


@pytest.fixture(scope="module")
async def fleet(fake_endpoint: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ServiceFleet]:
    """The four agent services as separate OS processes, backed by the fake endpoint."""
    models = fake_models(fake_endpoint.base_url, judge={"logprobs": True})
    async with ServiceFleet(models, tmp_path_factory.mktemp("fleet")) as running:
        yield running


@pytest.fixture
async def clients(fleet: ServiceFleet) -> AsyncIterator[AgentClients]:
    async with AgentClients(fleet.addresses) as connected:
        yield connected


@pytest.fixture(scope="session")
def local_llm() -> Iterator[LocalModelServer]:
    """The real embedded SmolLM2 server, shared by the whole test session. One thread: the other test worker keeps
    the second core busy, and llama.cpp's threads wait on each other at every token."""
    with LocalModelServer(threads=1) as server:
        yield server
