"""The HI/HELLO handshake: greeting, HELLO payload and password hash (reference sections 4.2 to 4.4)."""

from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from celery_faktory.errors import AuthenticationFailed, HandshakeError, MalformedReply, VersionMismatch
from celery_faktory.protocol.handshake import (
    PROTOCOL_VERSION,
    Greeting,
    encode_greeting,
    expected_password_hash,
    hello_payload,
    parse_greeting,
    password_hash,
)

PASSWORD = "s3cr3t-pässword"

# (password, salt, i in the greeting, expected pwdhash): section 4.4, v 2, i applications.
V2_VECTORS = [
    ("foobar", "55104dc76695721d", 1545, "6d877f8e5544b1f2598768f817413ab8a357afffa924dedae99eb91472d4ec30"),
    ("abcde123", "123", 3, "ef646abadf4ffba660d9bbb8de8e45576970de917b4c9da8cad96b49e64636d9"),
    (PASSWORD, "b119996f5a5e72a", 5965, "6846f77a609e4bb120914fa152ee5bf4ac09ba1f44b12923d9a168f761fe04e5"),
    ("tomlpw123", "7f8d0e7587e4c95b", 4607, "f320dd2f341fd96014002e75cf36e2e860d83a3bb596a8c45db991fbc92de8c8"),
]

# (password, salt, i in the greeting, v sent (0 = absent), expected pwdhash): a single application.
V1_VECTORS = [
    (PASSWORD, "28b2c3fdcd75073", 6550, 1, "10a0e990e9f0314f3a8e92385096749d70b209a8d8fad00cfffb120e593f0788"),
    (PASSWORD, "28e41eb715c6b76c", 4587, 0, "bb77924352584965071d6c5028c91638c0a0024a243b1a1cc7b89cbb8b74d2cd"),
]

# (password, salt, i, v sent, what was sent): each answered -ERR Invalid password by Faktory 1.9.4.
NEGATIVE_VECTORS = [
    pytest.param(
        PASSWORD, "c69e23d7ac62feb", 8074, 2, "7D10CADF164858843B1A86F0DA0EA48BFE56E3D0E946C248244598D2A6D64655",
        id="uppercase",
    ),
    pytest.param(
        PASSWORD, "54d10c02949dff26", 6154, 2, "2e7da06c5abc3fbbf459963390a9649f491853683a703a40004b4ce7453ecd1c",
        id="i-minus-1",
    ),
    pytest.param(
        PASSWORD, "2a24340cf4c2bcb9", 6227, 1, "41c437b3911ffd1f6dceb275fb4a2a27273742e72567fc56a1990c5b63bef752",
        id="full-iterations-with-v1",
    ),
]  # fmt: skip


# --------------------------------------------------------------------------------------------------------------
# password_hash
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("password", "salt", "iterations", "expected"), V2_VECTORS)
def test_password_hash_v2_vectors(password: str, salt: str, iterations: int, expected: str) -> None:
    assert password_hash(password, salt, iterations) == expected
    assert expected_password_hash(password, salt, iterations, 2) == expected


@pytest.mark.parametrize(("password", "salt", "iterations", "version", "expected"), V1_VECTORS)
def test_password_hash_single_application_vectors(
    password: str, salt: str, iterations: int, version: int, expected: str
) -> None:
    assert expected_password_hash(password, salt, iterations, version) == expected
    assert password_hash(password, salt, 1) == expected
    assert password_hash(password, salt, iterations) != expected


@pytest.mark.parametrize(("password", "salt", "iterations", "version", "sent"), NEGATIVE_VECTORS)
def test_negative_vectors_do_not_match(password: str, salt: str, iterations: int, version: int, sent: str) -> None:
    assert expected_password_hash(password, salt, iterations, version) != sent
    if version >= PROTOCOL_VERSION:
        assert password_hash(password, salt, iterations) != sent


def test_negative_vectors_are_what_they_claim() -> None:
    # The uppercase vector is the right digest, only uppercased; the others are the wrong number of applications.
    assert password_hash(PASSWORD, "c69e23d7ac62feb", 8074).upper() == NEGATIVE_VECTORS[0].values[4]
    assert password_hash(PASSWORD, "54d10c02949dff26", 6153) == NEGATIVE_VECTORS[1].values[4]
    assert password_hash(PASSWORD, "2a24340cf4c2bcb9", 6227) == NEGATIVE_VECTORS[2].values[4]


def test_password_hash_is_a_plain_sha256_loop_over_utf8() -> None:
    digest = hashlib.sha256((PASSWORD + "salt").encode("utf-8")).digest()
    assert password_hash(PASSWORD, "salt", 1) == digest.hex()
    for _ in range(4):
        digest = hashlib.sha256(digest).digest()
    assert password_hash(PASSWORD, "salt", 5) == digest.hex()


def test_password_hash_is_lowercase_hex() -> None:
    value = password_hash("pw", "abc", 10)
    assert len(value) == 64
    assert value == value.lower()
    int(value, 16)


def test_password_hash_differs_for_non_ascii_encodings() -> None:
    # UTF-8, not Latin-1: "ä" is two bytes.
    latin1 = hashlib.sha256(PASSWORD.encode("latin-1") + b"salt").hexdigest()
    assert password_hash(PASSWORD, "salt", 1) != latin1


@pytest.mark.parametrize("iterations", [0, -1])
def test_password_hash_needs_one_iteration(iterations: int) -> None:
    with pytest.raises(ValueError, match="iterations"):
        password_hash("pw", "salt", iterations)


@pytest.mark.parametrize("version", [0, 1])
def test_expected_password_hash_below_v2_ignores_iterations(version: int) -> None:
    assert expected_password_hash("pw", "s", 4000, version) == password_hash("pw", "s", 1)
    assert expected_password_hash("pw", "s", 4000, 2) == password_hash("pw", "s", 4000)


# --------------------------------------------------------------------------------------------------------------
# parse_greeting / encode_greeting
# --------------------------------------------------------------------------------------------------------------


def test_parse_greeting_without_password() -> None:
    greeting = parse_greeting('HI {"v":2}')
    assert greeting == Greeting(2)
    assert greeting.iterations is None
    assert greeting.salt is None
    assert not greeting.requires_password


def test_parse_greeting_with_password() -> None:
    greeting = parse_greeting('HI {"v":2,"i":5965,"s":"b119996f5a5e72a"}')
    assert greeting == Greeting(2, 5965, "b119996f5a5e72a")
    assert greeting.requires_password


def test_parse_greeting_ignores_unknown_fields_and_spacing() -> None:
    assert parse_greeting('HI { "v": 2, "x": [1] }') == Greeting(2)


@pytest.mark.parametrize("version", [1, 3, 4])
def test_parse_greeting_other_version(version: int) -> None:
    with pytest.raises(VersionMismatch) as info:
        parse_greeting(f'HI {{"v":{version}}}')
    assert isinstance(info.value, HandshakeError)
    assert not isinstance(info.value, MalformedReply)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "OK",
        "HI",
        "HI ",
        'HI{"v":2}',
        'hi {"v":2}',
        "HI not json",
        'HI {"v":2',
        "HI []",
        "HI 2",
        "HI {}",
        'HI {"v":"2"}',
        'HI {"v":2.0}',
        'HI {"v":true}',
        'HI {"v":null}',
        'HELLO {"v":2}',
    ],
)
def test_parse_greeting_garbage(text: str) -> None:
    with pytest.raises(MalformedReply):
        parse_greeting(text)


@pytest.mark.parametrize(
    "challenge",
    [
        '"i":5965',
        '"s":"abc"',
        '"i":0,"s":"abc"',
        '"i":-3,"s":"abc"',
        '"i":"5965","s":"abc"',
        '"i":true,"s":"abc"',
        '"i":1.5,"s":"abc"',
        '"i":5965,"s":5',
        '"i":5965,"s":null',
    ],
)
def test_parse_greeting_bad_challenge(challenge: str) -> None:
    with pytest.raises(MalformedReply):
        parse_greeting('HI {"v":2,' + challenge + "}")


def test_encode_greeting_exact_bytes() -> None:
    assert encode_greeting() == b'+HI {"v":2}\r\n'
    assert encode_greeting(5965, "b119996f5a5e72a") == b'+HI {"v":2,"i":5965,"s":"b119996f5a5e72a"}\r\n'


@given(st.integers(min_value=1, max_value=10**6), st.text(min_size=0, max_size=20))
@settings(max_examples=50)
def test_encode_greeting_round_trip(iterations: int, salt: str) -> None:
    line = encode_greeting(iterations, salt)
    assert line.startswith(b"+")
    assert line.endswith(b"\r\n")
    assert line.count(b"\n") == 1
    assert parse_greeting(line[1:-2].decode()) == Greeting(2, iterations, salt)


# --------------------------------------------------------------------------------------------------------------
# hello_payload
# --------------------------------------------------------------------------------------------------------------


def test_hello_payload_producer() -> None:
    payload = hello_payload(Greeting(2), hostname="box")
    assert payload == {"v": 2, "hostname": "box"}


@pytest.mark.parametrize("wid", [None, ""])
def test_hello_payload_without_wid_has_no_worker_fields(wid: str | None) -> None:
    payload = hello_payload(Greeting(2), hostname="box", wid=wid, pid=123, labels=["a", "b"])
    assert payload == {"v": 2, "hostname": "box"}


def test_hello_payload_worker() -> None:
    payload = hello_payload(Greeting(2), hostname="box", wid="w123", pid=4711, labels=("celery", "py"))
    assert payload == {"v": 2, "hostname": "box", "wid": "w123", "pid": 4711, "labels": ["celery", "py"]}
    assert isinstance(payload["labels"], list)


def test_hello_payload_worker_without_pid_or_labels() -> None:
    payload = hello_payload(Greeting(2), hostname="box", wid="w123")
    assert payload == {"v": 2, "hostname": "box", "wid": "w123", "labels": []}


def test_hello_payload_username() -> None:
    assert hello_payload(Greeting(2), hostname="h", username="bob")["username"] == "bob"
    assert "username" not in hello_payload(Greeting(2), hostname="h", username="")


def test_hello_payload_no_pwdhash_when_not_asked() -> None:
    payload = hello_payload(Greeting(2), hostname="box", password=PASSWORD)
    assert "pwdhash" not in payload


@pytest.mark.parametrize(("password", "salt", "iterations", "expected"), V2_VECTORS)
def test_hello_payload_pwdhash(password: str, salt: str, iterations: int, expected: str) -> None:
    greeting = parse_greeting(f'HI {{"v":2,"i":{iterations},"s":"{salt}"}}')
    payload = hello_payload(greeting, hostname="box", password=password)
    assert payload == {"v": 2, "hostname": "box", "pwdhash": expected}


def test_hello_payload_needs_a_password() -> None:
    with pytest.raises(AuthenticationFailed) as info:
        hello_payload(Greeting(2, 5965, "b119996f5a5e72a"), hostname="box")
    assert isinstance(info.value, HandshakeError)


def test_hello_payload_empty_password_is_still_a_password() -> None:
    payload = hello_payload(Greeting(2, 3, "salt"), hostname="box", password="")
    assert payload["pwdhash"] == password_hash("", "salt", 3)


def test_hello_payload_non_ascii_password_serialises() -> None:
    payload = hello_payload(Greeting(2, 5965, "b119996f5a5e72a"), hostname="hôte", password=PASSWORD)
    assert payload["pwdhash"] == "6846f77a609e4bb120914fa152ee5bf4ac09ba1f44b12923d9a168f761fe04e5"
    assert json.loads(json.dumps(payload)) == payload
