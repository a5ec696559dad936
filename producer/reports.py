"""What the producer sends: reports parsed from text lines, bundled samples, or
synthetic reports for load tests.

Only `id` and `message` ever go on the wire (docs/design.md, "Input value"); the
`expected` metrics of samples and generated reports are for checking results.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import resources

from pydantic import BaseModel, ConfigDict, Field


class ExpectedMetric(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    value: float
    unit: str = ""


class OutgoingReport(BaseModel):
    """One report to send. The record key is `id` when there is one."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str | None = Field(default=None, min_length=1)
    message: str = Field(min_length=1)

    def key(self) -> bytes | None:
        return self.id.encode() if self.id is not None else None

    def value(self) -> bytes:
        """The record value: plain text when that cannot be misread as JSON, else a JSON object."""
        if self.id is None and not _is_json(self.message):
            return self.message.encode()
        body: dict[str, str] = (
            {"message": self.message} if self.id is None else {"id": self.id, "message": self.message}
        )
        return json.dumps(body, ensure_ascii=False).encode()

    def with_id(self, report_id: str) -> OutgoingReport:
        return self.model_copy(update={"id": report_id})


class Sample(OutgoingReport):
    """A report with the metrics a correct extraction finds (values fully scaled)."""

    expected: list[ExpectedMetric] = Field(default_factory=list)


@dataclass(frozen=True)
class LineError:
    """An input line that cannot become a report."""

    line: int
    error: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.error}"


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def parse_text(text: str) -> OutgoingReport | str | None:
    """One line (or argument) as a report; None when blank; an error message when invalid.

    A JSON object must carry a string `message` and may carry an `id`; its other
    fields are dropped. Anything else is the plain-text message itself.
    """
    stripped = text.strip()
    if not stripped:
        return None
    if not stripped.startswith("{"):
        return OutgoingReport(message=stripped)
    try:
        obj = json.loads(stripped)
    except ValueError:
        return OutgoingReport(message=stripped)  # looks like JSON but is not: plain text, as the worker reads it
    if not isinstance(obj, dict):
        return OutgoingReport(message=stripped)
    report_id = obj.get("id")
    # Same rule as the worker (worker/intake.py): a string or an integer, not blank.
    if report_id is not None:
        if isinstance(report_id, bool) or not isinstance(report_id, str | int) or not str(report_id).strip():
            return '"id" must be a non-empty string'
        report_id = str(report_id).strip()
    message = obj.get("message")
    if not isinstance(message, str) or not message.strip():
        return '"message" must be a non-empty string'
    return OutgoingReport(id=report_id, message=message.strip())


def parse_lines(lines: Iterable[str | bytes]) -> Iterator[OutgoingReport | LineError]:
    """Reports from text lines (a JSONL file, stdin); blank lines are skipped.

    Byte lines are decoded one by one, so a line that is not UTF-8 is reported, not fatal.
    """
    for number, line in enumerate(lines, start=1):
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield LineError(number, f"not valid UTF-8 ({exc.reason} at byte {exc.start})")
                continue
        parsed = parse_text(line)
        if isinstance(parsed, str):
            yield LineError(number, parsed)
        elif parsed is not None:
            yield parsed


def with_ids(reports: Iterable[OutgoingReport], prefix: str | None) -> Iterator[OutgoingReport]:
    """Give reports without an id the id `<prefix>-<n>` (n counts all reports from 1)."""
    for n, report in enumerate(reports, start=1):
        yield report.with_id(f"{prefix}-{n:06d}") if prefix and report.id is None else report


def load_samples(id_prefix: str | None = None) -> list[Sample]:
    """The bundled sample reports (producer/samples.jsonl); ids become `<id_prefix>-<id>` when given,
    so a rerun can use fresh ids (readers deduplicate by id)."""
    text = resources.files("producer").joinpath("samples.jsonl").read_text(encoding="utf-8")
    samples = [Sample.model_validate_json(line) for line in text.splitlines() if line.strip()]
    if id_prefix:
        samples = [s.model_copy(update={"id": f"{id_prefix}-{s.id}"}) for s in samples]
    return samples
