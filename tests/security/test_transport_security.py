"""TLS, mutual TLS, the bearer token and message-size limits, against `judgeopt serve` running as its own process.

Certificates come from a throwaway PKI (``helpers.pki``): a server certificate for 127.0.0.1 and localhost, a client
certificate, and a second, unrelated CA with its own client certificate for the "wrong CA" cases.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from helpers.eventually import wait_until
from helpers.fake_openai import FakeOpenAI
from helpers.messages import critique_request
from helpers.pki import Pki, make_pki
from helpers.services import Served, served

from judgeopt.cli import main
from judgeopt.core.errors import ConfigError
from judgeopt.orchestrator.agent_clients import AgentClients, ClientSettings
from judgeopt.orchestrator.errors import AgentCallError
from judgeopt.v1 import common_pb2, loss_pb2, loss_pb2_grpc

TOKEN_ENV = "JUDGEOPT_TEST_SERVICE_TOKEN"
TOKEN = f"tok-{secrets.token_hex(16)}"
SMALL_LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


# --- `judgeopt serve` as a process ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_loss(pki: Pki, fake_endpoint: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The loss service with a server certificate: TLS only, no client certificate asked for."""
    log = tmp_path_factory.mktemp("tls") / "loss.log"
    flags = ("--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key))
    with served(log, *flags, endpoint=fake_endpoint.base_url) as service:
        yield service


@pytest.fixture(scope="module")
def mtls_loss(pki: Pki, fake_endpoint: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The loss service requiring client certificates from the test CA, and the bearer token."""
    log = tmp_path_factory.mktemp("mtls") / "loss.log"
    flags = ("--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key), "--tls-client-ca", str(pki.ca))
    with served(
        log, *flags, "--token-env", TOKEN_ENV, endpoint=fake_endpoint.base_url, env={TOKEN_ENV: TOKEN}
    ) as service:
        yield service


@pytest.fixture(scope="module")
def token_loss(fake_endpoint: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The loss service on plaintext, requiring the bearer token."""
    log = tmp_path_factory.mktemp("token") / "loss.log"
    with served(log, "--token-env", TOKEN_ENV, endpoint=fake_endpoint.base_url, env={TOKEN_ENV: TOKEN}) as service:
        yield service


@pytest.fixture(scope="module")
def small_loss(fake_endpoint: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The loss service accepting messages up to 64 KiB (set in the config file's service section)."""
    folder = tmp_path_factory.mktemp("small")
    config = folder / "judgeopt.yaml"
    config.write_text(yaml.safe_dump({"service": {"max_message_bytes": SMALL_LIMIT}}))
    with served(folder / "loss.log", "--config", str(config), endpoint=fake_endpoint.base_url) as service:
        yield service


@pytest.fixture
def token_in_env(monkeypatch: pytest.MonkeyPatch) -> str:
    """The orchestrator side's copy of the token, in the variable ``--token-env`` names."""
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    return TOKEN_ENV


async def raw_critique(
    channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...] = ()
) -> loss_pb2.CritiqueResponse:
    """One call without the orchestrator's client (no wait_for_ready, so a failed handshake fails at once)."""
    reply: loss_pb2.CritiqueResponse = await loss_pb2_grpc.LossServiceStub(channel).Critique(
        critique_request(), timeout=10, metadata=metadata
    )
    return reply


def credentials(root: Path | None, cert: Path | None = None, key: Path | None = None) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=root.read_bytes() if root else None,
        private_key=key.read_bytes() if key else None,
        certificate_chain=cert.read_bytes() if cert else None,
    )


# --- TLS ------------------------------------------------------------------------------------------------------


class TestTls:
    async def test_client_with_the_right_ca_gets_its_answer(
        self, tls_loss: Served, pki: Pki, endpoint: FakeOpenAI
    ) -> None:
        """The orchestrator's client, given the CA (--tls-ca), reaches the TLS service and gets the critique."""
        async with AgentClients({"loss": tls_loss.address}, ClientSettings(tls_ca=pki.ca)) as clients:
            reply = await clients.critique(critique_request())
        assert reply.critique.status == common_pb2.PARSE_STATUS_OK and reply.critique.text
        assert len(endpoint.requests) == 1

    @pytest.mark.parametrize("root", ["plaintext", "system-roots", "unrelated-ca"])
    async def test_client_without_the_ca_is_refused_unavailable(
        self, tls_loss: Served, pki: Pki, endpoint: FakeOpenAI, root: str
    ) -> None:
        """A plaintext client, a TLS client trusting only the system roots, and one trusting another CA all fail
        the handshake: UNAVAILABLE, and no model call is made."""
        if root == "plaintext":
            channel = grpc.aio.insecure_channel(tls_loss.address)
        else:
            ca = None if root == "system-roots" else pki.other_ca
            channel = grpc.aio.secure_channel(tls_loss.address, credentials(ca))
        async with channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await raw_critique(channel)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert endpoint.requests == []

    async def test_server_name_override_is_what_the_certificate_is_checked_against(
        self, tls_loss: Served, pki: Pki, endpoint: FakeOpenAI
    ) -> None:
        """--tls-server-name replaces the address's host in the check: a name the certificate holds passes, one
        it does not hold never connects (the call runs into its deadline)."""
        good = ClientSettings(tls_ca=pki.ca, server_name_override="localhost")
        async with AgentClients({"loss": tls_loss.address}, good) as clients:
            assert (await clients.critique(critique_request())).critique.text
        bad = ClientSettings(
            deadline_seconds={"loss": 1.0}, tls_ca=pki.ca, server_name_override="loss.elsewhere.example"
        )
        async with AgentClients({"loss": tls_loss.address}, bad) as clients:
            with pytest.raises(AgentCallError) as caught:
                await clients.critique(critique_request())
        assert caught.value.code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)
        assert len(endpoint.requests) == 1

    async def test_health_is_served_over_tls(self, tls_loss: Served, pki: Pki) -> None:
        """A TLS service answers the standard health check to a client that trusts its CA."""
        async with grpc.aio.secure_channel(tls_loss.address, credentials(pki.ca)) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


class TestMutualTls:
    async def test_client_certificate_and_token_get_the_answer(
        self, mtls_loss: Served, pki: Pki, endpoint: FakeOpenAI, token_in_env: str
    ) -> None:
        """With --tls-ca, --tls-cert/--tls-key and --token-env, the client passes both checks (the token rides
        as call credentials on the TLS channel)."""
        settings = ClientSettings(
            tls_ca=pki.ca, tls_cert=pki.client_cert, tls_key=pki.client_key, token_env=token_in_env
        )
        async with AgentClients({"loss": mtls_loss.address}, settings) as clients:
            reply = await clients.critique(critique_request())
        assert reply.critique.text
        assert len(endpoint.requests) == 1

    @pytest.mark.parametrize("client", ["no-certificate", "certificate-from-another-ca"])
    async def test_client_without_an_accepted_certificate_is_refused(
        self, mtls_loss: Served, pki: Pki, endpoint: FakeOpenAI, client: str
    ) -> None:
        """Without a client certificate, or with one the client CA did not issue, the handshake fails."""
        cert, key = (None, None) if client == "no-certificate" else (pki.other_client_cert, pki.other_client_key)
        token = (("authorization", f"Bearer {TOKEN}"),)
        async with grpc.aio.secure_channel(mtls_loss.address, credentials(pki.ca, cert, key)) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await raw_critique(channel, token)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert endpoint.requests == []

    async def test_client_certificate_alone_is_not_enough_when_a_token_is_required(
        self, mtls_loss: Served, pki: Pki, endpoint: FakeOpenAI
    ) -> None:
        """TLS and the token are separate checks: a valid client certificate without the token is UNAUTHENTICATED."""
        creds = credentials(pki.ca, pki.client_cert, pki.client_key)
        async with grpc.aio.secure_channel(mtls_loss.address, creds) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await raw_critique(channel)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert endpoint.requests == []


class TestHealthcheckCommand:
    """`judgeopt healthcheck`: what the image's HEALTHCHECK and the pods' exec probes run, since a kubelet's native
    gRPC probe cannot speak TLS."""

    def test_mutual_tls_with_the_pods_certificate_is_serving(
        self, mtls_loss: Served, pki: Pki, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Against the mutual-TLS service (which also requires a token: health needs none), the service's own
        certificate as the client certificate, checking the server and the role's service: exit 0, SERVING."""
        tls = ["--tls-ca", str(pki.ca), "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)]
        for service in ([], ["judgeopt.v1.LossService"]):
            code = main(["healthcheck", mtls_loss.address, *service, *tls])
            out = capsys.readouterr().out
            assert code == 0, out
            assert out.strip().endswith(": SERVING")

    @pytest.mark.parametrize(
        "flags",
        [
            [],
            ["--tls-ca", "{ca}"],
            ["--tls-ca", "{other_ca}", "--tls-cert", "{server_cert}", "--tls-key", "{server_key}"],
        ],
        ids=["plaintext", "no-client-certificate", "unrelated-ca"],
    )
    def test_without_what_the_service_requires_it_is_unhealthy(
        self, mtls_loss: Served, pki: Pki, capsys: pytest.CaptureFixture[str], flags: list[str]
    ) -> None:
        """Plaintext, TLS without a client certificate, and a CA that did not issue the service's certificate all
        fail the handshake: exit 1, and the line names no SERVING."""
        names = {"ca": pki.ca, "other_ca": pki.other_ca, "server_cert": pki.server_cert, "server_key": pki.server_key}
        code = main(["healthcheck", mtls_loss.address, "--timeout", "2", *(f.format(**names) for f in flags)])
        out = capsys.readouterr().out
        assert code == 1
        assert "SERVING" not in out.replace("NOT_SERVING", "")

    def test_an_unknown_service_name_is_unhealthy(
        self, tls_loss: Served, pki: Pki, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The probe checks the role's service: another role's name is not served here (exit 1, NOT_FOUND)."""
        code = main(["healthcheck", tls_loss.address, "judgeopt.v1.JudgeService", "--tls-ca", str(pki.ca)])
        assert code == 1
        assert "NOT_FOUND" in capsys.readouterr().out

    def test_unusable_tls_files_are_one_config_error_line(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A missing file stops the probe with one ConfigError line naming the flag and the path (exit 2)."""
        missing = tmp_path / "missing.pem"
        code = main(["healthcheck", "127.0.0.1:9", "--tls-ca", str(missing)])
        err = capsys.readouterr().err.strip()
        assert code == 2
        assert err == f"ConfigError: --tls-ca: cannot read {missing} (No such file or directory)"


# --- bearer token ---------------------------------------------------------------------------------------------


class TestBearerToken:
    @pytest.mark.parametrize(
        "metadata",
        [(), (("authorization", "Bearer tok-wrong"),), (("authorization", TOKEN),), (("x-token", TOKEN),)],
        ids=["none", "wrong-token", "no-bearer-scheme", "other-header"],
    )
    async def test_call_without_the_right_token_is_unauthenticated(
        self, token_loss: Served, endpoint: FakeOpenAI, metadata: tuple[tuple[str, str], ...]
    ) -> None:
        """Anything but `authorization: Bearer <token>` is refused with UNAUTHENTICATED before any model call."""
        async with grpc.aio.insecure_channel(token_loss.address) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await raw_critique(channel, metadata)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert endpoint.requests == []

    async def test_client_with_the_token_gets_the_answer(
        self, token_loss: Served, endpoint: FakeOpenAI, token_in_env: str
    ) -> None:
        """The orchestrator's client reads the token from the variable --token-env names and stamps every call."""
        async with AgentClients({"loss": token_loss.address}, ClientSettings(token_env=token_in_env)) as clients:
            first = await clients.critique(critique_request())
            second = await clients.critique(critique_request())
        assert first.critique.text and second.critique.text
        assert len(endpoint.requests) == 2

    async def test_health_answers_without_a_token_and_reflection_needs_it(
        self, token_loss: Served, token_in_env: str
    ) -> None:
        """Probes keep working: health says SERVING with no token at all. Reflection (which tells a stranger what
        the service offers) is refused UNAUTHENTICATED without the token and lists the services with it."""
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        async with grpc.aio.insecure_channel(token_loss.address) as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            for refused in ((), (("authorization", "Bearer tok-wrong"),)):
                # Nothing is written: the refusal comes before the first message, as the call's status.
                call = stub.ServerReflectionInfo(metadata=refused, timeout=5)
                assert await call.code() == grpc.StatusCode.UNAUTHENTICATED
            call = stub.ServerReflectionInfo(metadata=(("authorization", f"Bearer {TOKEN}"),), timeout=5)
            await call.write(request)
            listing = await call.read()
            await call.done_writing()
        services = {s.name for s in listing.list_services_response.service}
        assert {"judgeopt.v1.LossService", "grpc.health.v1.Health"} <= services

    async def test_refused_calls_are_logged_without_the_token(self, token_loss: Served, token_in_env: str) -> None:
        """A refused call leaves an access-log line with code UNAUTHENTICATED and its request id (from the metadata,
        as clients send it: a refused call's body is never read); the token (sent right or wrong) never appears in
        the service's log."""
        request = critique_request()
        metadata = (("authorization", f"Bearer {TOKEN}x"), ("x-request-id", request.meta.request_id))
        async with grpc.aio.insecure_channel(token_loss.address) as channel:
            with pytest.raises(grpc.aio.AioRpcError):
                await loss_pb2_grpc.LossServiceStub(channel).Critique(request, timeout=5, metadata=metadata)
        async with AgentClients({"loss": token_loss.address}, ClientSettings(token_env=token_in_env)) as clients:
            await clients.critique(critique_request())

        def refused_line_logged() -> bool:
            events = [json.loads(x) for x in token_loss.log.read_text().splitlines() if x.startswith("{")]
            return any(
                e.get("event") == "rpc"
                and e.get("request_id") == request.meta.request_id
                and e.get("code") == "UNAUTHENTICATED"
                for e in events
            )

        wait_until(refused_line_logged, timeout=10, message="no access-log line for the refused call")
        assert TOKEN not in token_loss.log.read_text()


# --- message-size limits --------------------------------------------------------------------------------------


class TestMessageSize:
    async def test_oversize_request_is_resource_exhausted_and_the_service_keeps_serving(
        self, small_loss: Served, endpoint: FakeOpenAI
    ) -> None:
        """A request over the service's max_message_bytes is refused with RESOURCE_EXHAUSTED before reaching the
        servicer; the next, normal call on the same service succeeds."""
        async with AgentClients({"loss": small_loss.address}) as clients:
            with pytest.raises(AgentCallError) as caught:
                await clients.critique(critique_request(verdict="x" * (2 * SMALL_LIMIT)))
            assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert endpoint.requests == []
            reply = await clients.critique(critique_request())
        assert reply.critique.text
        assert len(endpoint.requests) == 1

    async def test_the_client_limit_stops_an_oversize_request_before_it_is_sent(
        self, small_loss: Served, endpoint: FakeOpenAI
    ) -> None:
        """The orchestrator's own max_message_bytes applies to what it sends: RESOURCE_EXHAUSTED, nothing sent."""
        settings = ClientSettings(max_message_bytes=SMALL_LIMIT // 2)
        async with AgentClients({"loss": small_loss.address}, settings) as clients:
            with pytest.raises(AgentCallError) as caught:
                await clients.critique(critique_request(verdict="x" * SMALL_LIMIT))
            assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert (await clients.critique(critique_request())).critique.text
        assert len(endpoint.requests) == 1


# --- refused settings -----------------------------------------------------------------------------------------


class TestCredentialErrors:
    @pytest.mark.parametrize(
        ("flags", "fragment"),
        [
            (["--tls-cert", "{missing}", "--tls-key", "{server_key}"], "--tls-cert: cannot read {missing}"),
            (["--tls-cert", "{server_cert}", "--tls-key", "{missing}"], "--tls-key: cannot read {missing}"),
            (
                ["--tls-cert", "{not_pem}", "--tls-key", "{server_key}"],
                "--tls-cert: {not_pem} holds no PEM certificate",
            ),
            (
                ["--tls-cert", "{server_cert}", "--tls-key", "{not_pem}"],
                "--tls-key: {not_pem} holds no PEM private key",
            ),
            (
                ["--tls-cert", "{server_cert}", "--tls-key", "{client_key}"],
                "--tls-key: {client_key} is not the private",
            ),
            (
                ["--tls-cert", "{server_cert}", "--tls-key", "{server_key}", "--tls-client-ca", "{missing}"],
                "--tls-client-ca: cannot read {missing}",
            ),
            (["--tls-cert", "{server_cert}"], "must be given together"),
            (["--tls-client-ca", "{ca}"], "needs tls_cert and tls_key"),
            (
                ["--token-env", "JUDGEOPT_TEST_UNSET_TOKEN"],
                "--token-env: environment variable JUDGEOPT_TEST_UNSET_TOKEN",
            ),
        ],
        ids=[
            "missing-cert",
            "missing-key",
            "cert-not-pem",
            "key-not-pem",
            "key-of-another-cert",
            "missing-client-ca",
            "cert-without-key",
            "client-ca-without-cert",
            "token-variable-unset",
        ],
    )
    def test_serve_refuses_unusable_security_settings_in_one_line(
        self,
        pki: Pki,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch,
        flags: list[str],
        fragment: str,
    ) -> None:
        """`serve` checks its TLS files and token variable before starting: one `ConfigError:` line naming the
        flag and the path, exit 2."""
        monkeypatch.delenv("JUDGEOPT_TEST_UNSET_TOKEN", raising=False)
        (tmp_path / "not.pem").write_text("just some text\n")
        names = {
            "missing": str(tmp_path / "missing.pem"),
            "not_pem": str(tmp_path / "not.pem"),
            "server_cert": str(pki.server_cert),
            "server_key": str(pki.server_key),
            "client_key": str(pki.client_key),
            "ca": str(pki.ca),
        }
        code = main(["serve", "loss", "--endpoint", "http://127.0.0.1:9/v1", *(f.format(**names) for f in flags)])
        err = capsys.readouterr().err.strip()
        assert code == 2
        assert len(err.splitlines()) == 1
        assert err.startswith("ConfigError: ") and fragment.format(**names) in err

    @pytest.mark.parametrize(
        ("flags", "fragment"),
        [
            (["--tls-ca", "{missing}"], "--tls-ca: cannot read {missing}"),
            (["--tls-ca", "{ca}", "--tls-cert", "{client_cert}"], "--tls-cert and --tls-key must be given together"),
            (["--tls-ca", "{ca}", "--tls-cert", "{client_cert}", "--tls-key", "{missing}"], "--tls-key: cannot read"),
            (["--tls-cert", "{client_cert}", "--tls-key", "{client_key}"], "--tls-cert needs --tls-ca"),
            (["--token-env", "JUDGEOPT_TEST_UNSET_TOKEN"], "--token-env: environment variable JUDGEOPT_TEST_UNSET"),
        ],
        ids=["missing-ca", "cert-without-key", "missing-key", "cert-without-ca", "token-variable-unset"],
    )
    def test_orchestrator_refuses_unusable_security_settings_before_any_call(
        self,
        pki: Pki,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch,
        flags: list[str],
        fragment: str,
    ) -> None:
        """`optimize` with --<role>-addr checks --tls-ca/--tls-cert/--tls-key and the token first: one line, exit 2,
        and no run directory is created."""
        monkeypatch.delenv("JUDGEOPT_TEST_UNSET_TOKEN", raising=False)
        names = {
            "missing": str(tmp_path / "missing.pem"),
            "ca": str(pki.ca),
            "client_cert": str(pki.client_cert),
            "client_key": str(pki.client_key),
        }
        roles = ("judge", "loss", "gradient", "optimizer")
        addresses = [flag for role in roles for flag in (f"--{role}-addr", "127.0.0.1:9")]
        run_dir = tmp_path / "run"
        argv = ["optimize", "--endpoint", "http://127.0.0.1:9/v1", "--run-dir", str(run_dir), *addresses]
        code = main([*argv, *(f.format(**names) for f in flags)])
        err = capsys.readouterr().err.strip()
        assert code == 2
        assert len(err.splitlines()) == 1
        assert err.startswith("ConfigError: ") and fragment.format(**names) in err
        assert not run_dir.exists()

    def test_tls_needs_services_given_by_address(self, pki: Pki, capsys: pytest.CaptureFixture[str]) -> None:
        """Services the orchestrator starts itself listen on plaintext loopback, so --tls-ca without --<role>-addr
        is refused rather than silently ignored."""
        code = main(["optimize", "--endpoint", "http://127.0.0.1:9/v1", "--tls-ca", str(pki.ca)])
        assert code == 2
        assert "--tls-ca applies to running services given by --<role>-addr" in capsys.readouterr().err

    def test_client_settings_are_checked_when_built(self) -> None:
        """ClientSettings refuses a client certificate without its key, or without a CA, at construction."""
        with pytest.raises(ConfigError, match="--tls-cert and --tls-key must be given together"):
            ClientSettings(tls_ca=Path("ca.pem"), tls_cert=Path("c.pem"))
        with pytest.raises(ConfigError, match="--tls-server-name needs --tls-ca"):
            ClientSettings(server_name_override="judge.internal")
        with pytest.raises(ConfigError, match="--token-env must name an environment variable"):
            ClientSettings(token_env="not a name")
