"""Output records within a byte bound (worker/records.py, worker/limits.py): no Kafka needed."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from worker.limits import FRAMING_BYTES, bound
from worker.models import CompletedSteps, DeadLetter, ExtractResult, Metric, Source, StepFact
from worker.records import dead_letter_with_original, encode, encode_key, escaped_prefix, fit_dead_letter, minimal


def letter(**update: object) -> DeadLetter:
    base = DeadLetter(
        report_id="r-1",
        reason="no_metrics",
        error="no metrics were found in the report",
        failed_step="Extract metrics",
        source=Source(topic="reports", partition=2, offset=17, key="k" * 2000),
        invocation_id="inv_1",
    )
    return base.model_copy(update=update)


def size(record: DeadLetter) -> int:
    return len(encode_key(record.report_id)) + len(encode(record))


@pytest.mark.parametrize(
    "text", ["plain ascii " * 50, "€uro " * 200, 'quotes " and \\ backslashes\n\t' * 40, "\x01\x02 controls" * 30]
)
@pytest.mark.parametrize("budget", [0, 1, 5, 37, 200, 999])
def test_an_escaped_prefix_never_exceeds_its_budget_and_is_a_prefix(text: str, budget: int) -> None:
    prefix = escaped_prefix(text, budget)
    assert text.startswith(prefix)
    assert len(json.dumps(prefix, ensure_ascii=False)[1:-1].encode()) <= budget
    # ... and it is the longest one: one more character would not fit.
    if prefix != text:
        longer = text[: len(prefix) + 1]
        assert len(json.dumps(longer, ensure_ascii=False)[1:-1].encode()) > budget


def test_three_byte_characters_are_written_as_utf8_not_escapes() -> None:
    assert encode(letter(error="€")).count("€".encode()) == 1


def test_a_dead_letter_that_fits_is_untouched() -> None:
    raw = b'{"id": "r-1", "message": "nothing to see"}'
    fitted, value = dead_letter_with_original(letter(), raw, 100_000)
    assert fitted.shortened == [] and fitted.original_value == raw.decode()
    assert (fitted.original_bytes, fitted.original_sha256) == (len(raw), hashlib.sha256(raw).hexdigest())
    assert value == encode(fitted)


def test_a_long_original_is_cut_to_fit_with_its_length_and_hash_kept() -> None:
    raw = ("€" * 30_000).encode()
    fitted, value = dead_letter_with_original(letter(), raw, 20_000)
    assert len(value) + len(encode_key("r-1")) <= 20_000
    assert fitted.shortened == ["original_value"]
    assert raw.decode().startswith(fitted.original_value or "x")
    assert len(fitted.original_value or "") > 5_000  # most of the room went to the original
    assert (fitted.original_bytes, fitted.original_sha256) == (len(raw), hashlib.sha256(raw).hexdigest())


def test_a_binary_original_is_cut_in_whole_base64_quanta() -> None:
    raw = bytes(range(256)) * 100
    fitted, _ = dead_letter_with_original(letter(), raw, 10_000)
    assert fitted.original_encoding == "base64" and fitted.shortened == ["original_value"]
    assert raw.startswith(base64.b64decode(fitted.original_value or "", validate=True))


def test_completed_steps_go_before_the_original_when_both_cannot_fit() -> None:
    metrics = [Metric(name=f"metric number {i}", value=i, unit="USD") for i in range(500)]
    extract = ExtractResult(metrics=metrics, fact=StepFact(step="Extract metrics", provider="offline"))
    big = letter(completed=CompletedSteps(extract=extract))
    fitted, value = dead_letter_with_original(big, b"Revenue was $5M" * 100, 8_000)
    assert len(value) + 3 <= 8_000
    assert "completed" in fitted.shortened and fitted.completed == CompletedSteps()
    assert fitted.original_value == "Revenue was $5M" * 100  # the original survived whole


def test_when_nothing_else_fits_a_minimal_dead_letter_is_left() -> None:
    fitted, value = fit_dead_letter(letter(original_value="x" * 5000, error="e" * 5000), 1_000)
    assert fitted.original_value is None and fitted.source.key is None
    assert set(fitted.shortened) >= {"original_value", "source.key", "error"}
    assert fitted == minimal(letter(original_value="x" * 5000, error="e" * 5000))
    assert (fitted.reason, fitted.source.offset, fitted.report_id) == ("no_metrics", 17, "r-1")
    assert size(fitted) <= 1_500 and len(value) < 1_500


def test_the_bound_leaves_room_for_framing_and_compression() -> None:
    assert bound(1_048_588, 1_000_000) == 1_000_000 - FRAMING_BYTES
    assert bound(20_000, 1_000_000) == 20_000 - FRAMING_BYTES - 200
