"""Turn a raw Kafka record value into a `Report`, or say precisely why it cannot be one.

This is pure and deterministic (same bytes and headers, same answer), so the
handler can run it outside `ctx.run` and get the same result on every replay.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass

from worker.models import DeadLetterReason, Report, Source


@dataclass(frozen=True)
class Rejection:
    """Input that can never succeed, bound for the dead-letter topic."""

    report_id: str
    reason: DeadLetterReason
    error: str
    source: Source
    original_value: str | None
    original_encoding: str


def source_from_headers(headers: Mapping[str, str]) -> Source:
    """Record coordinates from the headers Restate's Kafka ingress sets (`kafka.*`)."""
    h = {k.lower(): v for k, v in headers.items()}

    def as_int(name: str) -> int | None:
        try:
            return int(h[name])
        except (KeyError, ValueError):
            return None

    return Source(
        topic=h.get("kafka.topic"),
        partition=as_int("kafka.partition"),
        offset=as_int("kafka.offset"),
        timestamp=as_int("kafka.timestamp"),
        key=_decode_key(h.get("kafka.key")),
    )


def _decode_key(encoded: str | None) -> str | None:
    if not encoded:
        return None
    try:
        return base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return encoded


def derived_report_id(source: Source, invocation_id: str) -> str:
    # Stable across redeliveries and retries: never change this format, readers
    # deduplicate on it. Outside Kafka (HTTP ingress) the invocation id is the stable handle.
    if source.topic is not None and source.partition is not None and source.offset is not None:
        return f"{source.topic}/{source.partition}/{source.offset}"
    return invocation_id


def read_report(
    raw: bytes | None, headers: Mapping[str, str], invocation_id: str, max_bytes: int
) -> Report | Rejection:
    source = source_from_headers(headers)
    fallback_id = derived_report_id(source, invocation_id)

    def reject(reason: DeadLetterReason, error: str, report_id: str = fallback_id) -> Rejection:
        value, encoding = original_value(raw)
        return Rejection(report_id, reason, error, source, value, encoding)

    if raw is None:
        return reject(DeadLetterReason.NULL_VALUE, "the record has no value (a tombstone)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return reject(DeadLetterReason.INVALID_UTF8, f"the value is not valid UTF-8 ({exc.reason} at byte {exc.start})")
    if not text.strip():
        return reject(DeadLetterReason.EMPTY, "the value is empty or whitespace only")

    message, given_id, problem = _parse(text)
    report_id = given_id or fallback_id
    if problem:
        return reject(DeadLetterReason.INVALID_SCHEMA, problem, report_id)
    assert message is not None
    if not message.strip():
        return reject(DeadLetterReason.EMPTY, "the message is empty or whitespace only", report_id)
    size = len(message.encode("utf-8"))
    if size > max_bytes:
        return reject(
            DeadLetterReason.TOO_LARGE, f"the message has {size} bytes, over the limit of {max_bytes}", report_id
        )
    return Report(report_id=report_id, message=message.strip(), source=source)


def _parse(text: str) -> tuple[str | None, str | None, str | None]:
    """(message, id, problem). Text that is not JSON at all is the message itself."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text, None, None
    except (ValueError, RecursionError) as exc:
        # Valid JSON syntax that Python refuses (a 5000-digit number, nesting deeper than the stack).
        return None, None, f"the JSON value cannot be processed: {type(exc).__name__}"
    if not isinstance(value, dict):
        return None, None, f'expected a JSON object {{"message": "...", "id": "..."}}, got {_json_kind(value)}'
    given_id = value.get("id")
    if given_id is not None and not (
        isinstance(given_id, str | int) and not isinstance(given_id, bool) and str(given_id).strip()
    ):
        return None, None, '"id" must be a non-empty string'
    report_id = str(given_id).strip() if given_id is not None else None
    message = value.get("message")
    if not isinstance(message, str):
        got = "missing" if "message" not in value else _json_kind(message)
        return None, report_id, f'"message" must be a string, it is {got}'
    return message, report_id, None


def _json_kind(value: object) -> str:
    kinds = {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
    }
    return "null" if value is None else kinds.get(type(value), type(value).__name__)


# Dead letters must fit in a Kafka record even when the input was huge.
MAX_ORIGINAL_BYTES = 256 * 1024


def original_value(raw: bytes | None) -> tuple[str | None, str]:
    if raw is None:
        return None, "none"
    try:
        return raw.decode("utf-8")[:MAX_ORIGINAL_BYTES], "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(raw[:MAX_ORIGINAL_BYTES]).decode("ascii"), "base64"
