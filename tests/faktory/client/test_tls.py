"""TLS (``tcp+tls://``) against our server with a certificate from a throwaway CA (trustme), reference §2.1."""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme

from celery_faktory.client import Client, Connection
from celery_faktory.config import ClientConfig
from celery_faktory.errors import ConnectFailed, FaktoryConnectionError
from celery_faktory.job import Job
from celery_faktory.server import FaktoryServer

pytestmark = pytest.mark.faktory_server_only

CONNECT_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("tls") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def server_context(ca: trustme.CA, *hosts: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*(hosts or ("127.0.0.1", "localhost"))).configure_cert(context)
    return context


@pytest.fixture
def tls_server(ca: trustme.CA, faktory_server_factory: Callable[..., FaktoryServer]) -> FaktoryServer:
    return faktory_server_factory(ssl_context=server_context(ca))


def test_the_server_url_selects_tls(tls_server: FaktoryServer) -> None:
    assert tls_server.url.startswith("tcp+tls://127.0.0.1:")
    assert ClientConfig.from_url(tls_server.url).tls is True


def test_client_with_the_ca(tls_server: FaktoryServer, ca_file: str) -> None:
    with Client(tls_server.url, tls_ca=ca_file) as client:
        job = Job("Secure", ["über TLS"], queue="tlsq")
        client.push(job)
        fetched = client.fetch("tlsq")
        assert fetched is not None
        assert fetched.args == ["über TLS"]
        client.ack(fetched.jid)
        assert client.info()["server"]["description"] == "Faktory"


def test_localhost_name_is_verified(tls_server: FaktoryServer, ca_file: str) -> None:
    url = tls_server.url.replace("127.0.0.1", "localhost")
    with Client(url, tls_ca=ca_file) as client:
        assert client.info()


def test_without_the_ca_the_certificate_is_refused(tls_server: FaktoryServer) -> None:
    with pytest.raises(ConnectFailed) as info:
        Connection(ClientConfig.from_url(tls_server.url, connect_timeout=CONNECT_TIMEOUT))
    assert "TLS" in str(info.value)
    assert "CERTIFICATE_VERIFY_FAILED" in str(info.value)
    with pytest.raises(ConnectFailed, match="TLS"), Client(tls_server.url, max_retries=0) as client:
        client.info()


def test_tls_verify_false(tls_server: FaktoryServer) -> None:
    with Client(tls_server.url, tls_verify=False) as client:
        assert client.info()["server"]["description"] == "Faktory"


def test_disable_hostname_verification_from_the_environment(tls_server: FaktoryServer) -> None:
    env = {"FAKTORY_URL": tls_server.url, "FAKTORY_DISABLE_HOSTNAME_VERIFICATION": "true"}
    with Client(config=ClientConfig.from_env(env)) as client:
        assert client.info()


def test_wrong_host_name_is_refused(
    ca: trustme.CA, ca_file: str, faktory_server_factory: Callable[..., FaktoryServer]
) -> None:
    server = faktory_server_factory(ssl_context=server_context(ca, "faktory.example.com"))
    with pytest.raises(ConnectFailed, match="TLS"):
        Connection(ClientConfig.from_url(server.url, tls_ca=ca_file, connect_timeout=CONNECT_TIMEOUT))
    with Client(server.url, tls_verify=False) as client:
        assert client.info()


def test_tls_with_a_password(
    ca: trustme.CA, ca_file: str, faktory_server_factory: Callable[..., FaktoryServer]
) -> None:
    server = faktory_server_factory(ssl_context=server_context(ca), password="tls-pässword")
    assert server.url.startswith("tcp+tls://:")
    with Client(server.url, tls_ca=ca_file) as client:
        assert client.info()


def test_client_certificate(
    ca: trustme.CA, ca_file: str, tmp_path: Path, faktory_server_factory: Callable[..., FaktoryServer]
) -> None:
    context = server_context(ca)
    context.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(context)
    server = faktory_server_factory(ssl_context=context)
    client_cert = ca.issue_cert("worker@example.com")
    cert_file, key_file = tmp_path / "client.pem", tmp_path / "client.key"
    client_cert.cert_chain_pems[0].write_to_path(str(cert_file))
    client_cert.private_key_pem.write_to_path(str(key_file))
    with Client(server.url, tls_ca=ca_file, tls_cert=str(cert_file), tls_key=str(key_file)) as client:
        assert client.info()
    with pytest.raises(FaktoryConnectionError):
        Connection(ClientConfig.from_url(server.url, tls_ca=ca_file, connect_timeout=CONNECT_TIMEOUT))


def test_tls_client_against_a_plain_server(faktory_server_factory: Callable[..., FaktoryServer], ca_file: str) -> None:
    plain = faktory_server_factory()
    url = plain.url.replace("tcp://", "tcp+tls://")
    started = time.monotonic()
    with pytest.raises(ConnectFailed) as info:
        Connection(ClientConfig.from_url(url, tls_ca=ca_file, connect_timeout=CONNECT_TIMEOUT))
    assert "TLS" in str(info.value)
    assert time.monotonic() - started < CONNECT_TIMEOUT + 1


def test_plain_client_against_a_tls_server(tls_server: FaktoryServer) -> None:
    url = tls_server.url.replace("tcp+tls://", "tcp://")
    started = time.monotonic()
    with pytest.raises(FaktoryConnectionError) as info:
        Connection(ClientConfig.from_url(url, connect_timeout=CONNECT_TIMEOUT))
    assert time.monotonic() - started < CONNECT_TIMEOUT + 1  # bounded by connect_timeout, not read_timeout
    message = str(info.value)
    # A clear error: it must not blame the 10 s read timeout that never applied, and should hint at TLS, as
    # the handshake errors for a server that closes do ("TLS mismatch, or not Faktory?").
    assert "10.0 s" not in message
    assert "TLS" in message


def test_plain_client_against_a_tls_server_through_the_client(tls_server: FaktoryServer) -> None:
    url = tls_server.url.replace("tcp+tls://", "tcp://")
    client = Client(url, connect_timeout=0.5, max_retries=1)
    started = time.monotonic()
    with pytest.raises(FaktoryConnectionError):
        client.info()
    # Never a hang: at worst every attempt waits connect_timeout once, plus the backoff.
    assert time.monotonic() - started < (client.max_retries + 1) * 0.5 + 1
