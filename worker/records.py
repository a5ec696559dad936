"""Output records as bytes, within a byte bound.

Every record the worker publishes is compact, key-sorted JSON built only from journaled
results, so a retried publish yields the same bytes. A table that does not fit its topic
becomes a dead letter (`output_too_large`); a dead letter is shortened until it fits: first
its copy of the original value (a prefix, cut by encoded bytes, with the whole value's
length and sha256 kept), then the outputs of the completed steps, then the record key it
quotes; `shortened` names what was cut.
"""

from __future__ import annotations

import json

from pydantic import BaseModel

from worker.intake import original_value
from worker.models import CompletedSteps, DeadLetter

# What a minimal dead letter keeps of the error text.
MINIMAL_ERROR_CHARS = 1000


def encode(record: BaseModel) -> bytes:
    # Key-sorted, compact, UTF-8 (not \u escapes: a 3-byte character stays 3 bytes). A lone
    # surrogate (which intake refuses, but an error text might quote) is written as its
    # JSON escape instead of failing the encoder.
    text = json.dumps(record.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8", errors="backslashreplace")


def encode_key(report_id: str) -> bytes:
    return report_id.encode("utf-8", errors="backslashreplace")


def fits(key: bytes, value: bytes, limit: int) -> bool:
    return len(key) + len(value) <= limit


def dead_letter_with_original(letter: DeadLetter, raw: bytes | None, limit: int) -> tuple[DeadLetter, bytes]:
    """The dead letter carrying as much of the original value as fits in `limit` bytes, encoded."""
    original = original_value(raw)
    whole = letter.model_copy(
        update={
            "original_value": original.value,
            "original_encoding": original.encoding,
            "original_bytes": original.size,
            "original_sha256": original.sha256,
        }
    )
    return fit_dead_letter(whole, limit)


def fit_dead_letter(letter: DeadLetter, limit: int) -> tuple[DeadLetter, bytes]:
    """Shorten `letter` until key + value fit in `limit` bytes; returns it and its encoding."""
    key = encode_key(letter.report_id)
    value = encode(letter)
    if fits(key, value, limit):
        return letter, value
    without_completed = _shortened(letter, "completed", completed=CompletedSteps())
    for candidate in (letter, without_completed):
        cut = _cut_original(candidate, limit - len(key))
        value = encode(cut)
        if fits(key, value, limit):
            return cut, value
    letter = minimal(letter)
    return letter, encode(letter)


def minimal(letter: DeadLetter) -> DeadLetter:
    """The dead letter's facts without any bulk: what is published when nothing larger fits."""
    cut = letter
    if letter.original_value is not None:
        cut = _shortened(cut, "original_value", original_value=None)
    if letter.completed != CompletedSteps():
        cut = _shortened(cut, "completed", completed=CompletedSteps())
    if letter.source.key is not None:
        cut = _shortened(cut, "source.key", source=letter.source.model_copy(update={"key": None}))
    if len(letter.error) > MINIMAL_ERROR_CHARS:
        cut = _shortened(cut, "error", error=letter.error[: MINIMAL_ERROR_CHARS - 3] + "...")
    return cut


def _shortened(letter: DeadLetter, field: str, **update: object) -> DeadLetter:
    names = letter.shortened if field in letter.shortened else [*letter.shortened, field]
    return letter.model_copy(update={**update, "shortened": names})


def _cut_original(letter: DeadLetter, budget: int) -> DeadLetter:
    """`letter` with its original value cut so that the whole record fits `budget` value bytes."""
    if letter.original_value is None:
        return letter
    without = _shortened(letter, "original_value", original_value="")
    room = budget - len(encode(without))
    if room <= 0:
        return _shortened(letter, "original_value", original_value=None)
    if letter.original_encoding == "base64":
        cut = letter.original_value[: room // 4 * 4]  # whole base64 quanta: it still decodes
    else:
        cut = escaped_prefix(letter.original_value, room)
    if cut == letter.original_value:
        return letter
    return _shortened(letter, "original_value", original_value=cut)


def escaped_prefix(text: str, budget: int) -> str:
    """The longest prefix of `text` whose JSON string body, UTF-8 encoded, has at most `budget` bytes."""
    escaped = json.dumps(text, ensure_ascii=False)[1:-1].encode("utf-8", errors="backslashreplace")
    if len(escaped) <= budget:
        return text
    cut = escaped[: max(0, budget)]
    # The cut may split a UTF-8 sequence or an escape (\n, \u0001): back off until it parses.
    for back in range(0, 8):
        try:
            prefix = json.loads(b'"' + cut[: len(cut) - back] + b'"')
        except ValueError:
            continue
        assert isinstance(prefix, str)
        return prefix
    return ""
