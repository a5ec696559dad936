"""Input validation: what a raw record value becomes (a report or a precise rejection)."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from worker.intake import Original, original_value, read_report
from worker.models import Rejection, Report, SourceRef

HEADERS = {"kafka.topic": "reports", "kafka.partition": "3", "kafka.offset": "42", "kafka.timestamp": "1700000000000"}
LIMIT = 64 * 1024


def read(raw: bytes | None, headers: dict[str, str] | None = None) -> Report | Rejection:
    return read_report(raw, HEADERS if headers is None else headers, "inv_1", LIMIT)


def test_json_object_with_id_and_message() -> None:
    report = read(json.dumps({"id": "r-1", "message": " Revenue was $3M. ", "extra": 1}).encode())
    assert isinstance(report, Report)
    assert (report.report_id, report.message) == ("r-1", "Revenue was $3M.")
    assert (report.source.topic, report.source.partition, report.source.offset) == ("reports", 3, 42)


def test_plain_text_is_the_message_and_id_comes_from_coordinates() -> None:
    report = read(b"Uptime was 99.9% in May")
    assert isinstance(report, Report)
    assert report.report_id == "reports/3/42"
    assert report.message == "Uptime was 99.9% in May"


def test_numeric_id_is_accepted_as_text() -> None:
    report = read(b'{"id": 7, "message": "3 incidents"}')
    assert isinstance(report, Report) and report.report_id == "7"


def test_without_kafka_headers_the_invocation_id_is_the_report_id() -> None:
    report = read(b"3 incidents", headers={})
    assert isinstance(report, Report) and report.report_id == "inv_1"


def test_record_key_is_decoded() -> None:
    key = base64.b64encode(b"customer-9").decode()
    report = read(b"3 incidents", headers={**HEADERS, "kafka.key": key})
    assert isinstance(report, Report) and report.source.key == "customer-9"


@pytest.mark.parametrize(
    ("raw", "reason", "needle"),
    [
        (None, "null_value", "tombstone"),
        (b"", "empty", "empty"),
        (b"  \n\t ", "empty", "whitespace"),
        (b"\xff\xfe\x00garbage", "invalid_utf8", "UTF-8"),
        (b"[1, 2, 3]", "invalid_schema", "array"),
        (b"null", "invalid_schema", "null"),
        (b'"just a json string"', "invalid_schema", "string"),
        (b"42", "invalid_schema", "number"),
        (b'{"id": "x"}', "invalid_schema", "missing"),
        (b'{"message": 5}', "invalid_schema", "number"),
        (b'{"message": {"text": "nested"}}', "invalid_schema", "object"),
        (b'{"message": "   "}', "empty", "message"),
        (b'{"id": "", "message": "3 incidents"}', "invalid_schema", "id"),
        (b'{"id": ["a"], "message": "3 incidents"}', "invalid_schema", "id"),
    ],
)
def test_rejections_carry_a_reason_code_and_a_clear_error(raw: bytes | None, reason: str, needle: str) -> None:
    result = read(raw)
    assert isinstance(result, Rejection), result
    assert result.reason == reason
    assert needle.lower() in result.error.lower()
    assert result.source.offset == 42


def test_too_large_counts_utf8_bytes_of_the_message() -> None:
    message = "€" * (LIMIT // 3 + 1)  # 3 bytes each: just over the limit
    result = read(json.dumps({"id": "big", "message": message}).encode())
    assert isinstance(result, Rejection)
    assert (result.reason, result.report_id) == ("too_large", "big")
    assert str(LIMIT) in result.error


def test_message_at_the_limit_is_accepted() -> None:
    assert isinstance(read(("a" * LIMIT).encode()), Report)


@pytest.mark.parametrize("raw", [b"7" * 5000, b"[" * 100_000 + b"]" * 100_000])
def test_json_python_cannot_parse_is_rejected_not_crashed(raw: bytes) -> None:
    result = read(raw)
    assert isinstance(result, Rejection) and result.reason == "invalid_schema"


def test_the_original_value_is_base64_when_not_text() -> None:
    raw = b"\xff\xfe\x00garbage"
    original = original_value(raw)
    assert original.encoding == "base64"
    assert base64.b64decode(original.value or "") == raw
    assert (original.size, original.sha256) == (len(raw), hashlib.sha256(raw).hexdigest())


def test_text_values_stay_text() -> None:
    original = original_value(b"[1, 2, 3]")
    assert (original.value, original.encoding, original.size) == ("[1, 2, 3]", "utf-8", 9)
    assert original_value(None) == Original(None, "none", None, None)


def test_same_input_same_answer() -> None:
    raw = b'{"message": 5}'
    assert read(raw) == read(raw)


# --- What no output record could carry -------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "report_id", "where"),
    [
        (b'{"id": "s1", "message": "Revenue \\ud800 grew"}', "s1", "the message"),
        (b'{"id": "s\\udfff", "message": "Revenue grew 5%"}', "reports/3/42", 'the "id"'),
        (b'{"id": "s2", "message": "Revenue grew 5%", "meta": {"note\\udbff": 1}}', "s2", "the field 'meta.note"),
        (b'{"id": "s3", "message": "Revenue grew 5%", "tags": ["ok", "\\udc00"]}', "s3", "the field 'tags[1]'"),
    ],
)
def test_a_lone_surrogate_anywhere_is_rejected(raw: bytes, report_id: str, where: str) -> None:
    result = read(raw)
    assert isinstance(result, Rejection), result
    assert (result.reason, result.report_id) == ("lone_surrogate", report_id)
    assert result.error.startswith(where)


def test_a_surrogate_pair_is_an_ordinary_character() -> None:
    report = read(b'{"id": "emoji-\\ud83d\\ude00", "message": "Revenue grew 5%"}')
    assert isinstance(report, Report) and report.report_id == "emoji-\U0001f600"


def test_an_id_over_the_limit_is_rejected_and_named_by_its_coordinates() -> None:
    at_limit = read(json.dumps({"id": "é" * 512, "message": "3 incidents"}).encode())  # 1024 bytes
    assert isinstance(at_limit, Report)
    over = read(json.dumps({"id": "é" * 512 + "x", "message": "3 incidents"}).encode())
    assert isinstance(over, Rejection)
    assert (over.reason, over.report_id) == ("id_too_long", "reports/3/42")
    assert "1025 bytes, over the limit of 1024" in over.error


def test_replay_of_names_the_first_record() -> None:
    origin = {"topic": "reports", "partition": 1, "offset": 7}
    report = read(json.dumps({"id": "q3", "message": "3 incidents", "replay_of": origin}).encode())
    assert isinstance(report, Report) and report.replay_of == SourceRef(**origin)
    bad = read(json.dumps({"id": "q3", "message": "3 incidents", "replay_of": {"topic": "reports"}}).encode())
    assert isinstance(bad, Rejection) and (bad.reason, bad.report_id) == ("invalid_schema", "q3")
    assert "replay_of" in bad.error
