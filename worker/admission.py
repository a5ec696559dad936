"""The `Input message` step: read the record, check where it came from, fix the policy.

Its result is journaled, so for every later attempt of the invocation the verdict on the input
and the settings that steer the handler's control flow (the chain of each step with its attempts
and backoff, the input limits, the source check) are the ones this step saw, whatever the
worker's settings are by then: a worker restarted with other settings replays every journal as
it was written.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import Field

from worker import provenance
from worker.chain import ChainConfig, get_chain_config
from worker.intake import read_report, source_from_headers, source_ref
from worker.models import DeadLetterReason, Model, Rejection, Report, Source
from worker.settings import get_settings


class Policy(Model):
    """The settings that steer one invocation, fixed when its input is read."""

    chain: ChainConfig
    max_message_bytes: int = Field(gt=0)
    max_report_id_bytes: int = Field(gt=0)
    verify_source: bool = Field(description="Check the claimed Kafka record first (VERIFY_KAFKA_SOURCE).")


class Admission(Model):
    """The journaled result of `Input message`: the report or why there is none, and the policy."""

    policy: Policy
    report: Report | None = None
    rejection: Rejection | None = None


def current_policy() -> Policy:
    s = get_settings()
    return Policy(
        chain=get_chain_config(),
        max_message_bytes=s.max_message_bytes,
        max_report_id_bytes=s.max_report_id_bytes,
        verify_source=s.verify_kafka_source,
    )


async def admit(raw: bytes | None, headers: Mapping[str, str], invocation_id: str) -> Admission:
    policy = current_policy()
    source = source_from_headers(headers)
    claimed = source_ref(source)
    if claimed is None:
        return _no_source(policy, invocation_id, "it did not come from a Kafka record (no kafka.* coordinates)")
    if policy.verify_source:
        problem = await provenance.mismatch(claimed, raw)
        if problem is not None:
            return _no_source(policy, invocation_id, f"it is not the Kafka record it claims to be: {problem}")
    verdict = read_report(raw, headers, invocation_id, policy.max_message_bytes, policy.max_report_id_bytes)
    if isinstance(verdict, Rejection):
        return Admission(policy=policy, rejection=verdict)
    return Admission(policy=policy, report=verdict)


def _no_source(policy: Policy, invocation_id: str, why: str) -> Admission:
    # No coordinates in the dead letter: readers take them as the report's identity, and these
    # were never a record's (or were claimed by someone else).
    rejection = Rejection(
        report_id=invocation_id,
        reason=DeadLetterReason.NO_SOURCE,
        error=f"refused: {why}; only records from the Kafka subscription are processed",
        source=Source(),
    )
    return Admission(policy=policy, rejection=rejection)
