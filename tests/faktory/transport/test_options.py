"""TransportOptions parsing and validation, and how kombu's connection parameters become a ClientConfig."""

from __future__ import annotations

import ssl
from typing import Any

import kombu
import pytest

from celery_faktory.clock import ManualClock
from celery_faktory.errors import ConfigurationError
from celery_faktory.transport import Channel, Transport, TransportOptions
from celery_faktory.transport.options import OPTION_NAMES
from celery_faktory.transport.transport import client_config


def test_defaults() -> None:
    options = TransportOptions.from_transport_options(None)
    assert options == TransportOptions()
    assert options.queue_name_prefix == ""
    assert (options.reserve_for, options.reserve_for_grace, options.retry) == (1800, 60, 25)
    assert options.priority_steps == (0, 3, 6, 9)
    assert options.fetch_priorities == (9, 6, 3, 0)
    assert (options.priority_order, options.reject_policy, options.job_args) == ("asc", "ack", "native")
    assert options.accept_foreign_jobs is True
    assert (options.eta_threshold, options.polling_interval, options.read_timeout) == (15.0, 0.1, 10.0)


def test_values_from_text_and_unknown_names() -> None:
    options = TransportOptions.from_transport_options(
        {
            "retry": "3",
            "priority_steps": "0, 5",
            "accept_foreign_jobs": "false",
            "eta_threshold": "2.5",
            "priority_order": "DESC",
            "max_retries": 3,  # kombu's own
            "visibility_timeout": 10,  # another transport's
            "connect_timeout": None,
        }
    )
    assert options.retry == 3
    assert options.priority_steps == (0, 5)
    assert options.fetch_priorities == (0, 5)
    assert options.accept_foreign_jobs is False
    assert options.eta_threshold == 2.5


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"retry": 0}, "retry must be at least 1"),
        ({"retry": True}, "retry must be an integer"),
        ({"reserve_for": 59}, "reserve_for must be between 60 and 86400"),
        ({"reserve_for": 86401}, "reserve_for must be between"),
        ({"reserve_for_grace": -1}, "reserve_for_grace"),
        ({"queue_name_prefix": "my app:"}, "queue_name_prefix may only contain"),
        ({"priority_steps": []}, "priority_steps"),
        ({"priority_steps": [3, 0]}, "ascending"),
        ({"priority_steps": [0, 0]}, "unique"),
        ({"priority_steps": [0, 300]}, "255"),
        ({"priority_steps": 5}, "list of integers"),
        ({"priority_order": "up"}, "priority_order"),
        ({"reject_policy": "drop"}, "reject_policy"),
        ({"job_args": "json"}, "job_args"),
        ({"eta_threshold": -1}, "eta_threshold"),
        ({"eta_threshold": "soon"}, "number of seconds"),
        ({"eta_threshold": float("inf")}, "finite"),
        ({"polling_interval": -0.1}, "polling_interval"),
        ({"read_timeout": 2}, "above 2 s"),
        ({"connect_timeout": 0}, "connect_timeout"),
        ({"command_connections": 0}, "command_connections"),
        ({"accept_foreign_jobs": "maybe"}, "true or false"),
        ({"tls": "yes please"}, "tls"),
        ({"clock": object()}, "Clock"),
    ],
)
def test_bad_values_are_refused_with_the_option_name(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        TransportOptions.from_transport_options(values)


def test_every_option_is_copied_by_kombu() -> None:
    assert set(OPTION_NAMES) <= set(Channel.from_transport_options)
    assert "body_encoding" in Channel.from_transport_options


def test_the_clock_option() -> None:
    clock = ManualClock(5_000_000_000)
    assert TransportOptions.from_transport_options({"clock": clock}).clock is clock


def config(url: str, **kwargs: Any) -> Any:
    connection = kombu.Connection(url, **kwargs)
    return client_config(connection, TransportOptions.from_transport_options(connection.transport_options))


def test_connection_parameters_become_a_client_config() -> None:
    plain = config("faktory://broker.example")
    assert (plain.host, plain.port, plain.password, plain.tls) == ("broker.example", 7419, None, False)
    secret = config("faktory://user:p%40ss@10.0.0.1:7500", connect_timeout=2, transport_options={"read_timeout": 30})
    assert (secret.host, secret.port, secret.password, secret.username) == ("10.0.0.1", 7500, "p@ss", "user")
    assert (secret.connect_timeout, secret.read_timeout) == (2.0, 30.0)
    assert config("faktory://h", transport_options={"connect_timeout": 0.5}).connect_timeout == 0.5


def test_tls_settings() -> None:
    assert config("faktory://h", ssl=True).tls is True
    verified = config("faktory://h", ssl={"ca_certs": "/ca.pem", "certfile": "/c.pem", "keyfile": "/k.pem"})
    assert (verified.tls, verified.tls_ca, verified.tls_cert, verified.tls_key) == (True, "/ca.pem", "/c.pem", "/k.pem")
    assert verified.tls_verify is True
    for reqs in (ssl.CERT_NONE, "CERT_NONE", "none", 0):
        assert config("faktory://h", ssl={"cert_reqs": reqs}).tls_verify is False
    assert config("faktory://h", ssl={"ssl_cert_reqs": ssl.CERT_REQUIRED}).tls_verify is True
    queried = config("faktory://h?ssl_cert_reqs=required&ssl_ca_certs=/q.pem")
    assert (queried.tls, queried.tls_ca, queried.tls_verify) == (True, "/q.pem", True)
    option = config("faktory://h", ssl={"ca_certs": "/ignored"}, transport_options={"tls": {"ca_certs": "/t.pem"}})
    assert option.tls_ca == "/t.pem"
    assert config("faktory://h", ssl=True, transport_options={"tls": False}).tls is False
    with pytest.raises(ConfigurationError, match="unknown TLS setting"):
        config("faktory://h", ssl={"ciphers": "ALL"})
    with pytest.raises(ConfigurationError, match="check_hostname"):
        config("faktory://h", ssl={"check_hostname": False})
    with pytest.raises(ConfigurationError, match="cert_reqs"):
        config("faktory://h", ssl={"cert_reqs": "sometimes"})


def test_bad_options_fail_when_the_transport_is_made() -> None:
    connection = kombu.Connection("faktory://h", transport="celery_faktory.transport:Transport",
                                  transport_options={"retry": 0})  # fmt: skip
    with pytest.raises(ConfigurationError, match="retry"):
        _ = connection.transport
    assert issubclass(Transport, kombu.transport.virtual.Transport)
