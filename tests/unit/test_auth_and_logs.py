"""API-key loading, reloading after the key file changes, and the JSON log format."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from modelplane.http.auth import key_is_valid, load_api_keys, presented_key
from modelplane.http.key_store import ApiKeys
from modelplane.http.logs import JsonFormatter
from tests.support.secret_volume import SecretVolume


def test_keys_from_file_and_environment(tmp_path: Path) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text("# current\nkey-a\n\n  key-b  \nkey-a\n")
    keys = load_api_keys(key_file, {"MODELPLANE_API_KEYS": "key-c, key-b,,"})
    assert keys == ("key-a", "key-b", "key-c")


def test_no_keys_means_open_api() -> None:
    assert load_api_keys(None, {}) == ()


@pytest.mark.parametrize("content", ["", "# only a comment\n\n"])
def test_empty_key_file_is_an_error(tmp_path: Path, content: str) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text(content)
    with pytest.raises(ValueError, match="holds no key"):
        load_api_keys(key_file, {})


def test_unreadable_key_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read API key file"):
        load_api_keys(tmp_path / "missing", {})


@pytest.mark.parametrize(
    "headers,expected",
    [
        ([(b"authorization", b"Bearer abc")], "abc"),
        ([(b"authorization", b"bearer  abc ")], "abc"),
        ([(b"authorization", b"Basic abc")], None),
        ([(b"api-key", b"xyz")], "xyz"),
        ([], None),
    ],
)
def test_presented_key(headers: list[tuple[bytes, bytes]], expected: str | None) -> None:
    assert presented_key({"headers": headers}) == expected


def test_key_check() -> None:
    assert key_is_valid("b", ("a", "b"))
    assert not key_is_valid("c", ("a", "b"))
    assert not key_is_valid(None, ("a",))
    assert not key_is_valid("a", ())


def test_json_log_line_carries_extra_fields() -> None:
    record = logging.LogRecord("modelplane.x", logging.INFO, __file__, 1, "hi %s", ("you",), None)
    record.request_id = "r-1"
    line = json.loads(JsonFormatter().format(record))
    assert line["msg"] == "hi you" and line["level"] == "info" and line["request_id"] == "r-1"
    assert line["ts"].endswith("Z")


def bearer(key: str) -> dict[str, object]:
    return {"headers": [(b"authorization", f"Bearer {key}".encode())]}


def test_keys_follow_a_secret_volume_swapped_the_kubelets_way(tmp_path: Path) -> None:
    volume = SecretVolume(tmp_path / "secret", {"keys": "key-a\n"})
    keys = ApiKeys(volume.path("keys"), {})
    assert keys.allows(bearer("key-a")) and not keys.allows(bearer("key-b"))
    assert not keys.reload()  # unchanged content: nothing to do
    volume.update({"keys": "# rotated\nkey-b\n"})
    assert keys.reload()
    assert not keys.allows(bearer("key-a")) and keys.allows(bearer("key-b"))


def test_an_emptied_key_file_refuses_everyone_and_never_opens_the_api(tmp_path: Path) -> None:
    volume = SecretVolume(tmp_path / "secret", {"keys": "key-a\n"})
    keys = ApiKeys(volume.path("keys"), {"MODELPLANE_API_KEYS": "key-env"})
    volume.update({"keys": "# all revoked\n"})
    keys.reload()
    assert keys.required
    assert keys.current == ("key-env",)
    assert not keys.allows(bearer("key-a")) and not keys.allows({"headers": []})


def test_an_unreadable_key_file_keeps_the_keys_read_before(tmp_path: Path) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text("key-a\n")
    keys = ApiKeys(key_file, {})
    key_file.unlink()
    assert not keys.reload()
    assert keys.allows(bearer("key-a"))
    key_file.write_bytes(b"\xff\xfe not text")
    assert not keys.reload()
    assert keys.allows(bearer("key-a"))


def test_fixed_keys_and_no_keys() -> None:
    assert not ApiKeys.fixed(()).required and ApiKeys.fixed(()).allows({"headers": []})
    fixed = ApiKeys.fixed(("k",))
    assert fixed.allows(bearer("k")) and not fixed.allows(bearer("x")) and not fixed.reload()
