"""A real multi-host deployment: every agent service in its own network namespace with its own address, two loss
replicas, the orchestrator in yet another namespace, and a scripted OpenAI-compatible endpoint on the bridge.

    root namespace: bridge 10.77.N.1/24 (the model endpoint) ── veth ──┬─ judge         10.77.N.2
                                                                       ├─ gradient      10.77.N.3
                                                                       ├─ optimizer     10.77.N.4
                                                                       ├─ loss-a        10.77.N.5
                                                                       ├─ loss-b        10.77.N.6
                                                                       └─ orchestrator  10.77.N.7

Every agent binds an address other machines reach, so it serves as it would in a cluster: mutual TLS (a throwaway
PKI, ``helpers.pki``: one agent certificate naming every agent address and ``judgeopt-agents``) and a bearer token.
The orchestrator presents its client certificate and the token; the two loss replicas behind ``ipv4:A,B`` share
no name with the target, so their certificate is checked against ``judgeopt-agents`` (``--tls-server-name``).

The namespaces, veths and bridge are created and removed here (root needed). In CI this must run: without root or
when ``ip netns add`` fails, the tests FAIL; they skip only off CI ($CI unset) when not root.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers.eventually import wait_until  # type: ignore[import-not-found,unused-ignore]
from helpers.fake_openai import FakeOpenAI  # type: ignore[import-not-found,unused-ignore]
from helpers.pki import Pki, make_pki  # type: ignore[import-not-found,unused-ignore]
from helpers.runs import assert_audited_every_call  # type: ignore[import-not-found,unused-ignore]
from helpers.scripts import deterministic_handler  # type: ignore[import-not-found,unused-ignore]

from judgeopt.services.healthcheck import ProbeTLS, check

REPO = Path(__file__).resolve().parents[2]
JUDGEOPT = REPO / ".venv" / "bin" / "judgeopt"
DATA_DIR = (REPO / ".." / "shared" / "data").resolve()
PORT = 50051

# namespace name -> (role, last octet)
AGENTS: dict[str, tuple[str, int]] = {
    "judge": ("judge", 2),
    "gradient": ("gradient", 3),
    "optimizer": ("optimizer", 4),
    "loss-a": ("loss", 5),
    "loss-b": ("loss", 6),
}
ORCHESTRATOR_OCTET = 7
STEPS = 3
RUN_SETTINGS: dict[str, Any] = {
    "mode": "SSS",
    "steps": STEPS,
    "batch_size": 2,
    "gate": "none",
    "bootstrap_resamples": 0,
    "concurrency": 4,
    "dataset": {"name": "summeval", "train_size": 12, "val_size": 4, "test_size": 6},
}
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "grpc_proxy", "no_proxy")
TOKEN_ENV = "JUDGEOPT_MULTIHOST_TOKEN"
TOKEN = f"tok-{os.urandom(16).hex()}"
AGENTS_NAME = "judgeopt-agents"


def _clean_env() -> dict[str, str]:
    """The environment for the namespaced processes: no HTTP proxy may carry traffic meant for the bridge, and the
    services' bearer token in its variable."""
    return {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARIABLES} | {TOKEN_ENV: TOKEN}


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def _free_subnet() -> str:
    """``10.77.N`` with no address of this machine in it (10.77.0 unless a concurrent run holds it)."""
    used = _ip("-o", "-4", "addr", "show").stdout
    for n in range(256):
        if f" 10.77.{n}." not in used:
            return f"10.77.{n}"
    raise RuntimeError("no free 10.77.N.0/24 subnet for the test network")


def _tail(path: Path, lines: int = 5) -> str:
    if not path.exists():
        return "(no output)"
    return "\n".join(path.read_text(errors="replace").strip().splitlines()[-lines:]) or "(no output)"


@dataclass
class Lab:
    """The test network and the processes in it; ``close()`` removes everything, whatever state it is in."""

    work: Path
    pki: Pki | None = None
    tag: str = field(default_factory=lambda: f"jo{os.getpid()}")
    subnet: str = ""
    namespaces: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def bridge(self) -> str:
        return f"{self.tag}br"

    def ns(self, name: str) -> str:
        return f"{self.tag}-{name}"

    def address(self, octet: int) -> str:
        return f"{self.subnet}.{octet}"

    def agent_address(self, name: str) -> str:
        return f"{self.address(AGENTS[name][1])}:{PORT}"

    def make_pki(self) -> Pki:
        """The agents' certificate names every agent address (and ``judgeopt-agents``); known once the subnet is."""
        folder = self.work / "pki"
        folder.mkdir()
        addresses = [self.address(octet) for _, octet in AGENTS.values()]
        self.pki = make_pki(folder, names=(AGENTS_NAME,), addresses=addresses)
        return self.pki

    @property
    def probe_tls(self) -> ProbeTLS:
        assert self.pki is not None
        return ProbeTLS(self.pki.ca, self.pki.server_cert, self.pki.server_key)

    # --- network ------------------------------------------------------------------------------------------------

    def build_network(self) -> None:
        self.subnet = _free_subnet()
        _ip("link", "add", self.bridge, "type", "bridge")
        self.links.append(self.bridge)
        # Bridged frames must not meet the host's iptables (br_netfilter): this is a private test segment.
        _ip(
            "link", "set", self.bridge, "type", "bridge", "nf_call_iptables", "0", "nf_call_ip6tables", "0", check=False
        )
        _ip("addr", "add", f"{self.address(1)}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        hosts = [*((name, octet) for name, (_, octet) in AGENTS.items()), ("orchestrator", ORCHESTRATOR_OCTET)]
        for index, (name, octet) in enumerate(hosts):
            namespace = self.ns(name)
            _ip("netns", "add", namespace)
            self.namespaces.append(namespace)
            veth = f"{self.tag}v{index}"
            _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", namespace)
            self.links.append(veth)
            _ip("link", "set", veth, "master", self.bridge, "up")
            _ip("-n", namespace, "addr", "add", f"{self.address(octet)}/24", "dev", "eth0")
            _ip("-n", namespace, "link", "set", "eth0", "up")
            _ip("-n", namespace, "link", "set", "lo", "up")

    # --- processes ----------------------------------------------------------------------------------------------

    def spawn(self, key: str, namespace: str, command: Sequence[str]) -> subprocess.Popen[bytes]:
        log = self.work / f"{key}.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                ["ip", "netns", "exec", self.ns(namespace), *command],
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=_clean_env(),
                start_new_session=True,
            )
        self.processes[key] = process
        return process

    def start_agents(self, config: Path, ledgers: Path) -> None:
        pki = self.pki
        assert pki is not None
        for name, (role, _) in AGENTS.items():
            host = self.agent_address(name).rsplit(":", 1)[0]
            self.spawn(
                name,
                name,
                [
                    *(str(JUDGEOPT), "serve", role, "--host", host, "--port", str(PORT)),
                    *("--ledger", str(ledgers / f"{name}.ledger.jsonl"), "--config", str(config)),
                    *("--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)),
                    *("--tls-client-ca", str(pki.ca), "--token-env", TOKEN_ENV),
                ],
            )
        for name in AGENTS:
            process = self.processes[name]

            def serving(name: str = name, process: subprocess.Popen[bytes] = process) -> bool:
                if process.poll() is not None:
                    log = _tail(self.work / f"{name}.log")
                    raise AssertionError(f"the {name} service exited with {process.returncode}:\n{log}")
                return check(self.agent_address(name), timeout=1.0, tls=self.probe_tls)[0]

            wait_until(serving, timeout=60, interval=0.1, message=f"the {name} service never answered SERVING")

    def kill(self, key: str) -> None:
        process = self.processes[key]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def close(self) -> list[str]:
        """Stop every process (SIGTERM, then SIGKILL), delete the namespaces and links; returns what failed."""
        problems: list[str] = []
        for process in self.processes.values():
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for key, process in self.processes.items():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    problems.append(f"process {key} ({process.pid}) did not exit")
        for namespace in reversed(self.namespaces):
            result = _ip("netns", "del", namespace, check=False)
            if result.returncode != 0:
                problems.append(f"ip netns del {namespace}: {result.stderr.strip()}")
        for link in reversed(self.links):
            # A veth goes with its namespace's end, asynchronously: one already gone (before or during the del) is fine.
            result = _ip("link", "del", link, check=False)
            if result.returncode != 0 and "Cannot find device" not in result.stderr:
                problems.append(f"ip link del {link}: {result.stderr.strip()}")
        return problems


def _require_root_and_netns() -> None:
    if os.geteuid() != 0:
        if not os.environ.get("CI"):
            pytest.skip("network namespaces need root (this test never skips in CI)")
        pytest.fail("the multi-host test must run as root in CI: it creates network namespaces with `ip netns add`")
    if shutil.which("ip") is None:
        pytest.fail("`ip` (iproute2) is missing: apt-get install -y iproute2 (.ci/run does this)")
    if not (DATA_DIR / "summeval.jsonl").is_file():
        pytest.fail(f"SummEval data not found at {DATA_DIR} (shared/data beside the checkout)")
    if not JUDGEOPT.is_file():
        pytest.fail(f"{JUDGEOPT} is missing: run ./scripts/install.sh")


@dataclass(frozen=True)
class Deployment:
    lab: Lab
    config: Path
    ledgers: Path
    endpoint: FakeOpenAI

    def optimize_command(self, run_dir: Path) -> list[str]:
        lab = self.lab
        pki = lab.pki
        assert pki is not None
        loss = ",".join(lab.agent_address(name) for name in ("loss-a", "loss-b"))
        return [
            *(str(JUDGEOPT), "optimize", "--config", str(self.config), "--run-dir", str(run_dir)),
            *("--data-dir", str(DATA_DIR)),
            *("--judge-addr", lab.agent_address("judge"), "--loss-addr", f"ipv4:{loss}"),
            *("--gradient-addr", lab.agent_address("gradient"), "--optimizer-addr", lab.agent_address("optimizer")),
            *("--tls-ca", str(pki.ca), "--tls-cert", str(pki.client_cert), "--tls-key", str(pki.client_key)),
            *("--tls-server-name", AGENTS_NAME, "--token-env", TOKEN_ENV),
        ]

    def collect_ledgers(self, run_dir: Path) -> None:
        """``judgeopt audit`` reads RUN_DIR/services/*.ledger.jsonl; the services wrote theirs elsewhere."""
        target = run_dir / "services"
        target.mkdir(parents=True, exist_ok=True)
        for ledger in self.ledgers.glob("*.ledger.jsonl"):
            shutil.copy(ledger, target / ledger.name)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    _require_root_and_netns()
    work = tmp_path_factory.mktemp("multihost")
    lab = Lab(work)
    try:
        try:
            lab.build_network()
        except RuntimeError as exc:
            pytest.fail(f"could not build the test network (network namespaces need root and iproute2): {exc}")
        lab.make_pki()
        with FakeOpenAI(deterministic_handler(), host=lab.address(1)) as endpoint:
            config = work / "models.yaml"
            models = {
                "base_url": endpoint.base_url,
                "model": "fake-model",
                "structured_output": "json_schema",
                "max_retries": 0,
                "timeout": 10,
            }
            config.write_text(yaml.safe_dump({"models": {"default": models}, "run": RUN_SETTINGS}))
            ledgers = work / "ledgers"
            ledgers.mkdir()
            lab.start_agents(config, ledgers)
            yield Deployment(lab, config, ledgers, endpoint)
    finally:
        problems = lab.close()
        assert not problems, f"cleaning up the test network: {problems}"


def _optimize(deployment: Deployment, run_dir: Path) -> subprocess.Popen[bytes]:
    return deployment.lab.spawn(run_dir.name, "orchestrator", deployment.optimize_command(run_dir))


def _finish(deployment: Deployment, process: subprocess.Popen[bytes], run_dir: Path) -> dict[str, Any]:
    try:
        code = process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        deployment.lab.kill(run_dir.name)
        raise AssertionError(f"the run did not finish:\n{_tail(deployment.lab.work / f'{run_dir.name}.log')}") from None
    assert code == 0, f"optimize exited {code}:\n{_tail(deployment.lab.work / f'{run_dir.name}.log', 15)}"
    summary: dict[str, Any] = json.loads((run_dir / "summary.json").read_text())
    return summary


def _ledger_requests(path: Path, run_id: str) -> list[str]:
    ids = []
    for line in path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):  # a replica killed mid-write may leave a torn last line
            entry = json.loads(line)
            if entry.get("run_id") == run_id:
                ids.append(str(entry["request_id"]))
    return ids


def _audit(run_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(JUDGEOPT), "audit", str(run_dir)], capture_output=True, text=True, timeout=60, env=_clean_env()
    )


def _headline(summary: dict[str, Any]) -> dict[str, Any]:
    return {
        "initial": summary["initial"],
        "best": summary["best"],
        "steps": [{k: s[k] for k in ("step", "accepted", "macro_rho", "rho")} for s in summary["steps"]],
    }


@pytest.fixture(scope="module")
def reference_run(deployment: Deployment) -> tuple[Path, dict[str, Any]]:
    """An undisturbed run across the namespaces (the reference for the disturbed one)."""
    run_dir = deployment.lab.work / "undisturbed"
    summary = _finish(deployment, _optimize(deployment, run_dir), run_dir)
    deployment.collect_ledgers(run_dir)
    return run_dir, summary


class TestMultiHost:
    @pytest.mark.timeout(180)
    def test_a_run_across_namespaces_completes_and_spreads_calls_over_both_loss_replicas(
        self, deployment: Deployment, reference_run: tuple[Path, dict[str, Any]]
    ) -> None:
        """Each agent in its own namespace and address, the orchestrator in another: the SSS run completes with
        every step, both loss replicas received calls of this run (round-robin over ipv4:A,B), and the audit of
        what the services received passes."""
        run_dir, summary = reference_run
        assert summary["status"] == "complete"
        assert [s["step"] for s in summary["steps"]] == list(range(STEPS + 1))
        loss_calls = {
            name: _ledger_requests(deployment.ledgers / f"{name}.ledger.jsonl", summary["run_id"])
            for name in ("loss-a", "loss-b")
        }
        assert all(loss_calls.values()), f"loss calls were not spread over both replicas: {loss_calls}"
        for name in ("judge", "gradient", "optimizer"):
            assert _ledger_requests(deployment.ledgers / f"{name}.ledger.jsonl", summary["run_id"]), name
        audit = _audit(run_dir)
        assert audit.returncode == 0, audit.stdout + audit.stderr
        assert_audited_every_call(audit.stdout, run_dir)

    def test_the_agents_speak_only_mutual_tls(self, deployment: Deployment) -> None:
        """From the bridge, every agent refuses a plaintext probe and a TLS probe without a client certificate; the
        probe presenting the agents' own certificate finds it SERVING (health needs no token)."""
        lab = deployment.lab
        assert lab.pki is not None
        for name in AGENTS:
            address = lab.agent_address(name)
            assert check(address, timeout=2)[0] is False, name
            assert check(address, timeout=2, tls=ProbeTLS(lab.pki.ca))[0] is False, name
            assert check(address, timeout=2, tls=lab.probe_tls) == (True, "SERVING"), name

    @pytest.mark.timeout(180)
    def test_killing_a_loss_replica_mid_run_still_completes_with_nothing_lost(
        self, deployment: Deployment, reference_run: tuple[Path, dict[str, Any]]
    ) -> None:
        """SIGKILL one loss replica while it holds loss calls of the run (the model takes 2 s on them): those attempts
        fail and are answered on retry by the other replica, which takes every loss call of the run; the run
        completes with every step exactly once, no call attempt stored twice, the same metrics as the undisturbed
        run, and a clean audit of every call."""
        from helpers.fake_openai import RecordedRequest, Reply  # type: ignore[import-not-found,unused-ignore]
        from helpers.scripts import role_of, with_latency  # type: ignore[import-not-found,unused-ignore]

        reference_dir, reference = reference_run
        run_dir = deployment.lab.work / "disturbed"
        store = run_dir / "run.sqlite"
        scripted = deterministic_handler()
        slow = with_latency(scripted, 2.0)

        def slow_loss(request: RecordedRequest) -> Reply:  # a loss call stays in flight long enough to be cut
            return slow(request) if role_of(request) == "loss" else scripted(request)

        deployment.endpoint.set_handler(slow_loss)
        process = _optimize(deployment, run_dir)
        try:

            def run_id() -> str | None:
                if process.poll() is not None:
                    raise AssertionError(
                        f"the run ended before the kill:\n{_tail(deployment.lab.work / 'disturbed.log')}"
                    )
                try:
                    with contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True)) as db:
                        row = db.execute("SELECT value FROM meta WHERE key = 'manifest'").fetchone()
                except sqlite3.OperationalError:  # the store is still being created
                    return None
                return None if row is None else str(json.loads(row[0])["run_id"])

            wait_until(lambda: run_id() is not None, timeout=90, interval=0.01, message="the run never started")
            disturbed = run_id()
            assert disturbed is not None
            ledger_b = deployment.ledgers / "loss-b.ledger.jsonl"
            wait_until(lambda: bool(_ledger_requests(ledger_b, disturbed)), timeout=90, interval=0.01)
            deployment.lab.kill("loss-b")
        finally:
            deployment.endpoint.set_handler(scripted)
        cut = set(_ledger_requests(ledger_b, disturbed))  # what loss-b took before it died, all still in flight
        summary = _finish(deployment, process, run_dir)

        assert summary["status"] == "complete"
        assert _headline(summary) == _headline(reference)
        with contextlib.closing(sqlite3.connect(store)) as db:
            steps = db.execute("SELECT step FROM steps ORDER BY step").fetchall()
            duplicates = db.execute(
                "SELECT COUNT(*) FROM (SELECT request_id, attempt FROM calls GROUP BY 1, 2 HAVING COUNT(*) > 1)"
            ).fetchone()[0]
            unanswered = db.execute(
                "SELECT COUNT(*) FROM (SELECT request_id FROM calls GROUP BY request_id HAVING SUM(outcome = 'ok') = 0)"
            ).fetchone()[0]
            loss_ok = {r for (r,) in db.execute("SELECT request_id FROM calls WHERE stage = 'loss' AND outcome = 'ok'")}
            failed = {
                r for (r,) in db.execute("SELECT request_id FROM calls WHERE stage = 'loss' AND outcome = 'failed'")
            }
        with contextlib.closing(sqlite3.connect(reference_dir / "run.sqlite")) as db:
            reference_loss = db.execute(
                "SELECT COUNT(*) FROM calls WHERE stage = 'loss' AND outcome = 'ok'"
            ).fetchone()[0]
        assert steps == [(step,) for step in range(STEPS + 1)]  # every step exactly once
        assert duplicates == 0
        assert unanswered == 0  # every call was eventually answered: nothing lost
        assert len(loss_ok) == reference_loss
        # The kill's effect: every call loss-b held failed, and was answered on retry by loss-a, which took every
        # loss call of the run from then on (loss-b answered none).
        assert cut and cut <= failed, (cut, failed)
        survivor = set(_ledger_requests(deployment.ledgers / "loss-a.ledger.jsonl", summary["run_id"]))
        assert failed <= survivor and loss_ok <= survivor
        deployment.collect_ledgers(run_dir)
        audit = _audit(run_dir)
        assert audit.returncode == 0, audit.stdout + audit.stderr
        assert_audited_every_call(audit.stdout, run_dir)
