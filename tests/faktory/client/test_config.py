"""ClientConfig: Faktory URLs, the environment, TLS options and password hygiene (reference section 2)."""

from __future__ import annotations

import ssl

import pytest

from celery_faktory.client import Client
from celery_faktory.config import DEFAULT_URL, ClientConfig
from celery_faktory.errors import ConfigurationError

SECRET = "s3cr3t-P@ss:w/rd=ü"


# -- from_url --------------------------------------------------------------------------------------------


def test_from_url_tcp() -> None:
    config = ClientConfig.from_url("tcp://faktory.example.com:7500")
    assert (config.host, config.port, config.tls, config.password, config.username) == (
        "faktory.example.com",
        7500,
        False,
        None,
        None,
    )


def test_from_url_tcp_tls() -> None:
    config = ClientConfig.from_url("tcp+tls://faktory.example.com:7500")
    assert config.tls is True
    assert config.tls_verify is True
    assert config.port == 7500
    assert config.url == "tcp+tls://faktory.example.com:7500"


@pytest.mark.parametrize("url", ["tcp://faktory.example.com", "tcp+tls://faktory.example.com", "tcp://:pw@h"])
def test_from_url_default_port(url: str) -> None:
    assert ClientConfig.from_url(url).port == 7419


@pytest.mark.parametrize(
    ("url", "password"),
    [
        ("tcp://:abcd%3D@host", "abcd="),  # URL-encoded
        ("tcp://:abcd=@host", "abcd="),  # the Node client's test: left as is
        ("tcp://:p%40ss%3Aw%2Frd@host:7419", "p@ss:w/rd"),
        ("tcp://:s3cr3t-p%C3%A4ssword@host", "s3cr3t-pässword"),
        ("tcp://:@host", ""),
    ],
)
def test_from_url_decodes_the_password(url: str, password: str) -> None:
    config = ClientConfig.from_url(url)
    assert config.password == password
    assert config.host == "host"
    assert config.username is None


def test_from_url_username_and_password() -> None:
    config = ClientConfig.from_url("tcp://proxy%20user:secret@host:1234")
    assert config.username == "proxy user"
    assert config.password == "secret"
    assert config.port == 1234


def test_from_url_username_without_password() -> None:
    config = ClientConfig.from_url("tcp://someone@host")
    assert config.username == "someone"
    assert config.password is None


def test_from_url_ipv6() -> None:
    config = ClientConfig.from_url("tcp://[::1]:7419")
    assert config.host == "::1"
    assert config.port == 7419
    assert config.url == "tcp://[::1]:7419"
    assert ClientConfig.from_url("tcp://:pw@[fe80::1]").host == "fe80::1"


def test_from_url_options_override_the_url() -> None:
    config = ClientConfig.from_url("tcp://:pw@host:1234", port=4321, password="other", read_timeout=30)
    assert (config.port, config.password, config.read_timeout) == (4321, "other", 30)


@pytest.mark.parametrize(
    "url",
    [
        "http://host:7419",
        "redis://host",
        "host:7419",
        "tcp+ssl://host",
        "tcp://",
        "tcp://:secret@",
        "tcp://:7419",
        "tcp://host:99999",
        "tcp://host:notaport",
        "",
    ],
)
def test_from_url_refuses_what_is_not_a_faktory_url(url: str) -> None:
    with pytest.raises(ConfigurationError):
        ClientConfig.from_url(url)


def test_the_url_error_masks_the_password() -> None:
    with pytest.raises(ConfigurationError) as info:
        ClientConfig.from_url("http://:topsecret@host")
    assert "topsecret" not in str(info.value)


def test_url_round_trips_a_password_with_special_characters() -> None:
    config = ClientConfig(host="h", password=SECRET, username="me")
    again = ClientConfig.from_url(config.url)
    assert again.password == SECRET
    assert again.username == "me"
    assert again.host == "h"


# -- from_env --------------------------------------------------------------------------------------------


def test_from_env_default() -> None:
    config = ClientConfig.from_env({})
    assert (config.host, config.port, config.tls) == ("localhost", 7419, False)
    assert DEFAULT_URL == "tcp://localhost:7419"


def test_from_env_faktory_url() -> None:
    config = ClientConfig.from_env({"FAKTORY_URL": "tcp://:pw@faktory.internal:7555"})
    assert (config.host, config.port, config.password) == ("faktory.internal", 7555, "pw")


def test_from_env_provider_names_another_variable() -> None:
    env = {
        "FAKTORY_PROVIDER": "FAKTORYTOGO_URL",
        "FAKTORYTOGO_URL": "tcp+tls://:x@togo.example:9999",
        "FAKTORY_URL": "tcp://ignored:1111",
    }
    config = ClientConfig.from_env(env)
    assert (config.host, config.port, config.tls, config.password) == ("togo.example", 9999, True, "x")


def test_from_env_provider_holding_a_url_is_an_error() -> None:
    with pytest.raises(ConfigurationError, match="FAKTORY_PROVIDER"):
        ClientConfig.from_env({"FAKTORY_PROVIDER": "tcp://localhost:7419"})


def test_from_env_provider_naming_an_unset_variable_is_an_error() -> None:
    with pytest.raises(ConfigurationError, match="NOT_SET_ANYWHERE"):
        ClientConfig.from_env({"FAKTORY_PROVIDER": "NOT_SET_ANYWHERE", "FAKTORY_URL": "tcp://h:1"})


def test_from_env_empty_provider_falls_back_to_faktory_url() -> None:
    config = ClientConfig.from_env({"FAKTORY_PROVIDER": "", "FAKTORY_URL": "tcp://fallback:1234"})
    assert config.host == "fallback"


def test_from_env_disable_hostname_verification() -> None:
    env = {"FAKTORY_URL": "tcp+tls://h", "FAKTORY_DISABLE_HOSTNAME_VERIFICATION": "1"}
    assert ClientConfig.from_env(env).tls_verify is False
    assert ClientConfig.from_env({"FAKTORY_URL": "tcp+tls://h"}).tls_verify is True


def test_from_env_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FAKTORY_URL", raising=False)
    monkeypatch.setenv("FAKTORY_PROVIDER", "MY_FAKTORY")
    monkeypatch.setenv("MY_FAKTORY", "tcp://from-os-environ:7777")
    assert ClientConfig.from_env().host == "from-os-environ"
    assert ClientConfig.resolve().port == 7777
    assert ClientConfig.resolve("tcp://explicit:1").host == "explicit"
    assert Client().config.host == "from-os-environ"  # no connection is opened before the first command


# -- validation, safety ----------------------------------------------------------------------------------


@pytest.mark.parametrize("read_timeout", [2.0, 1.0, 0.5, 0, -1])
def test_read_timeout_must_exceed_the_fetch_block(read_timeout: float) -> None:
    with pytest.raises(ConfigurationError, match="read_timeout"):
        ClientConfig(read_timeout=read_timeout)
    with pytest.raises(ConfigurationError):
        Client("tcp://localhost", read_timeout=read_timeout)


def test_read_timeout_just_above_the_block_is_accepted() -> None:
    assert ClientConfig(read_timeout=2.01).read_timeout == 2.01


@pytest.mark.parametrize("port", [0, -1, 65536])
def test_port_range(port: int) -> None:
    with pytest.raises(ConfigurationError):
        ClientConfig(port=port)


def test_tls_key_needs_tls_cert() -> None:
    with pytest.raises(ConfigurationError):
        ClientConfig(tls=True, tls_key="/some/key.pem")


def test_safe_url_and_repr_never_contain_the_password() -> None:
    config = ClientConfig.from_url("tcp+tls://admin:" + "s3cr3t%40xyz" + "@host:7419")
    assert config.password == "s3cr3t@xyz"
    assert config.safe_url == "tcp+tls://admin:***@host:7419"
    for text in (config.safe_url, repr(config), str(config), repr(Client(config=config))):
        assert "s3cr3t" not in text
        assert "xyz" not in text
    assert "s3cr3t%40xyz" in config.url  # the real URL does carry it, quoted


def test_safe_url_without_password() -> None:
    assert ClientConfig.from_url("tcp://host").safe_url == "tcp://host:7419"
    assert ClientConfig.from_url("tcp://:@host").safe_url == "tcp://:***@host:7419"


def test_with_options() -> None:
    config = ClientConfig.from_url("tcp://:pw@host")
    changed = config.with_options(password="other", port=1)
    assert (changed.password, changed.port, changed.host) == ("other", 1, "host")
    assert config.password == "pw"


def test_ssl_context() -> None:
    assert ClientConfig().ssl_context() is None
    verifying = ClientConfig(tls=True).ssl_context()
    assert verifying is not None
    assert verifying.verify_mode == ssl.CERT_REQUIRED
    assert verifying.check_hostname is True
    assert verifying.minimum_version >= ssl.TLSVersion.TLSv1_2
    lax = ClientConfig(tls=True, tls_verify=False).ssl_context()
    assert lax is not None
    assert lax.verify_mode == ssl.CERT_NONE
    assert lax.check_hostname is False


def test_hostname_and_labels_defaults() -> None:
    import socket

    config = ClientConfig()
    assert config.hostname == socket.gethostname()
    assert config.labels == ("python",)
