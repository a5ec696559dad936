"""Turn a raw Kafka record value into a `Report`, or say precisely why it cannot be one.

This is pure and deterministic (same bytes, headers and limits, same answer). The handler
runs it inside the journaled `Input message` step, so its verdict is fixed per invocation.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import ValidationError

from worker.models import DeadLetterReason, Rejection, Report, Source, SourceRef

# The most an id may hold unless configured otherwise (MAX_REPORT_ID_BYTES): an id is a label
# that every output record carries as its key, not a place for data.
DEFAULT_MAX_ID_BYTES = 1024
# A UTF-16 surrogate that is not part of a pair: JSON can spell it ("\ud800"), but no UTF-8
# encoder can write it, so a report carrying one could never be published.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


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


def source_ref(source: Source) -> SourceRef | None:
    """The record's coordinates, when all three are known (only Kafka records have them)."""
    if source.topic is None or source.partition is None or source.offset is None:
        return None
    return SourceRef(topic=source.topic, partition=source.partition, offset=source.offset)


def derived_report_id(source: Source, invocation_id: str) -> str:
    # Stable across redeliveries and retries: never change this format, readers show it and
    # replay selects by it. Outside Kafka (HTTP ingress) the invocation id is the stable handle.
    ref = source_ref(source)
    return str(ref) if ref is not None else invocation_id


def read_report(
    raw: bytes | None,
    headers: Mapping[str, str],
    invocation_id: str,
    max_bytes: int,
    max_id_bytes: int = DEFAULT_MAX_ID_BYTES,
) -> Report | Rejection:
    source = source_from_headers(headers)
    fallback_id = derived_report_id(source, invocation_id)

    def reject(reason: DeadLetterReason, error: str, report_id: str = fallback_id) -> Rejection:
        return Rejection(report_id=report_id, reason=reason, error=error, source=source)

    if raw is None:
        return reject(DeadLetterReason.NULL_VALUE, "the record has no value (a tombstone)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return reject(DeadLetterReason.INVALID_UTF8, f"the value is not valid UTF-8 ({exc.reason} at byte {exc.start})")
    if not text.strip():
        return reject(DeadLetterReason.EMPTY, "the value is empty or whitespace only")

    parsed = _parse(text)
    if isinstance(parsed, str):
        return reject(DeadLetterReason.INVALID_SCHEMA, parsed)
    if parsed.report_id is not None and _LONE_SURROGATE.search(parsed.report_id):
        error = 'the "id" contains a lone UTF-16 surrogate (e.g. "\\ud800"), not text'
        return reject(DeadLetterReason.LONE_SURROGATE, error)
    if parsed.id_problem:
        return reject(DeadLetterReason.INVALID_SCHEMA, parsed.id_problem)
    given_id = parsed.report_id
    if given_id is not None and len(given_id.encode("utf-8")) > max_id_bytes:
        size = len(given_id.encode("utf-8"))
        return reject(DeadLetterReason.ID_TOO_LONG, f'the "id" has {size} bytes, over the limit of {max_id_bytes}')
    report_id = given_id or fallback_id
    if parsed.surrogate_at is not None:
        where = "the message" if parsed.surrogate_at == "message" else f"the field {parsed.surrogate_at!r}"
        error = f'{where} contains a lone UTF-16 surrogate (e.g. "\\ud800"), not text'
        return reject(DeadLetterReason.LONE_SURROGATE, error, report_id)
    if parsed.problem:
        return reject(DeadLetterReason.INVALID_SCHEMA, parsed.problem, report_id)
    message = parsed.message
    assert message is not None
    if not message.strip():
        return reject(DeadLetterReason.EMPTY, "the message is empty or whitespace only", report_id)
    size = len(message.encode("utf-8"))
    if size > max_bytes:
        error = f"the message has {size} bytes, over the limit of {max_bytes}"
        return reject(DeadLetterReason.TOO_LARGE, error, report_id)
    return Report(report_id=report_id, message=message.strip(), source=source, replay_of=parsed.replay_of)


@dataclass(frozen=True)
class _Parsed:
    message: str | None = None
    report_id: str | None = None
    replay_of: SourceRef | None = None
    id_problem: str | None = None
    problem: str | None = None
    surrogate_at: str | None = None
    """Where the first lone surrogate is: "id", "message", or another field's path."""


def _parse(text: str) -> _Parsed | str:
    """The parts of a value, or (a str) why it is not an object at all. Text that is not JSON is the message."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return _Parsed(message=text)
    except (ValueError, RecursionError) as exc:
        # Valid JSON syntax that Python refuses (a 5000-digit number, nesting deeper than the stack).
        return f"the JSON value cannot be processed: {type(exc).__name__}"
    if not isinstance(value, dict):
        return f'expected a JSON object {{"message": "...", "id": "..."}}, got {_json_kind(value)}'
    surrogate_at = _lone_surrogate_path(value)
    given_id = value.get("id")
    id_problem = None
    report_id = None
    if given_id is not None:
        if isinstance(given_id, str | int) and not isinstance(given_id, bool) and str(given_id).strip():
            report_id = str(given_id).strip()
        else:
            id_problem = '"id" must be a non-empty string'
    replay_of, problem = _replay_of(value.get("replay_of"))
    message = value.get("message")
    if not isinstance(message, str):
        got = "missing" if "message" not in value else _json_kind(message)
        problem = f'"message" must be a string, it is {got}'
        message = None
    return _Parsed(message, report_id, replay_of, id_problem, problem, surrogate_at)


def _replay_of(value: object) -> tuple[SourceRef | None, str | None]:
    if value is None:
        return None, None
    try:
        return SourceRef.model_validate(value, strict=True), None
    except ValidationError:
        return None, '"replay_of" must be {"topic": str, "partition": int, "offset": int}'


def _lone_surrogate_path(value: object, path: str = "") -> str | None:
    """The path of the first string (or key) holding a lone surrogate, e.g. "message" or "extra[2]"."""
    if isinstance(value, str):
        return (path or "value") if _LONE_SURROGATE.search(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{key}" if path else str(key)
            if _LONE_SURROGATE.search(key):
                return here
            found = _lone_surrogate_path(item, here)
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _lone_surrogate_path(item, f"{path}[{i}]")
            if found is not None:
                return found
    return None


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


@dataclass(frozen=True)
class Original:
    """The input value as a dead letter carries it: text (or base64 when not UTF-8), its size and hash."""

    value: str | None
    encoding: str
    size: int | None
    sha256: str | None


def original_value(raw: bytes | None) -> Original:
    if raw is None:
        return Original(None, "none", None, None)
    digest = hashlib.sha256(raw).hexdigest()
    try:
        return Original(raw.decode("utf-8"), "utf-8", len(raw), digest)
    except UnicodeDecodeError:
        return Original(base64.b64encode(raw).decode("ascii"), "base64", len(raw), digest)
