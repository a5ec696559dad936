"""One chaos run: a fresh local stack, the chaos LLM server, paced inputs, scheduled kills,
a bounded wait for quiescence, and the accounting."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from chaos.accounting import Accounting, LLMCall, account
from chaos.injector import FaultInjector
from chaos.inputs import PlannedInput, build_inputs, crash_prefix
from chaos.llm_faults import ChaosLLMServer, fault_of
from chaos.observe import OutputCollector, invocation_states, journaled_response_ids
from chaos.schedule import LLMFaultRates, ProcessFault, process_schedule
from chaos.sender import Sender
from devstack.config import StackConfig
from devstack.stack import Stack

PROGRESS_EVERY_S = 5.0
SETTLE_S = 3.0  # after quiescence: late duplicates or second outcomes would show up now


class ChaosConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    reports: int = Field(default=2000, ge=1)
    seed: int = 1
    rates: LLMFaultRates = LLMFaultRates()
    poison_rate: float = Field(default=0.02, ge=0, le=1)
    publish_crashes: int = Field(default=3, ge=0)
    # About 8 reports/s: what a 2-core machine shared with other stacks sustains. Faster input only
    # builds a backlog, and a backlog released at once after a kill overloads the worker.
    duration: float = Field(default=240.0, gt=0, description="Fault window, seconds from the first send.")
    send_seconds: float | None = Field(default=None, gt=0, description="Default: the whole fault window.")
    worker_kill_every: float = Field(default=30.0, ge=0, description="0: no scheduled worker kills.")
    restate_kill: bool = True
    kafka_kill: bool = True
    restate_down_s: float = Field(default=1.0, ge=0)
    kafka_down_s: float = Field(default=5.0, ge=0)
    drain_timeout: float = Field(default=300.0, gt=0)
    step_max_attempts: int = Field(default=3, ge=1)
    # Generous: on a loaded machine a burst of calls can take seconds just to get through the event loop.
    llm_timeout: float = Field(default=10.0, gt=0)
    llm_latency: float = Field(default=0.02, ge=0)
    max_message_bytes: int = Field(default=8192, gt=0)
    stack_offset: int = 10600
    keep_stack: bool = False

    @property
    def send_window(self) -> float:
        return self.send_seconds if self.send_seconds is not None else self.duration

    def schedule(self) -> list[ProcessFault]:
        return process_schedule(
            self.seed,
            self.duration,
            self.worker_kill_every,
            restate_kill=self.restate_kill,
            kafka_kill=self.kafka_kill,
            restate_down_s=self.restate_down_s,
            kafka_down_s=self.kafka_down_s,
        )


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def worker_env(config: ChaosConfig, llm: ChaosLLMServer, run_dir: Path) -> dict[str, str]:
    """The worker under chaos: OpenAI provider against the chaos LLM server, short timeouts and backoffs
    so recovery fits in a run, and the crash-after-publish fault for a few report ids."""
    return {
        "LLM_PROVIDER": "openai",
        "OPENAI_API_KEY": "chaos-not-a-secret",
        "OPENAI_BASE_URL": llm.base_url,
        "LLM_MODEL": "chaos-model",
        # Empty means unset (worker/settings.py): nothing leaks in from the caller's environment.
        "LLM_MODEL_EXTRACT": "",
        "LLM_MODEL_SORT": "",
        "LLM_MODEL_FORMAT": "",
        "LLM_PRICE_PROMPT_PER_1K": "",
        "LLM_PRICE_COMPLETION_PER_1K": "",
        "LLM_TIMEOUT_SECONDS": str(config.llm_timeout),
        "STEP_MAX_ATTEMPTS": str(config.step_max_attempts),
        "STEP_RETRY_INITIAL_INTERVAL": "0.2",
        "STEP_RETRY_MAX_INTERVAL": "2",
        "MAX_MESSAGE_BYTES": str(config.max_message_bytes),
        "INVOCATION_RETRY_MAX_INTERVAL": "5",
        # One publish attempt gives up after 5 s while Kafka is down; Restate retries the step.
        "KAFKA_MESSAGE_TIMEOUT_MS": "5000",
        "FAULT_CRASH_AFTER_PUBLISH": crash_prefix(config.seed) if config.publish_crashes else "",
        "FAULT_STATE_DIR": str(run_dir / "fault-state"),
        "RESTATE_IDENTITY_KEYS": "",
        "LOG_LEVEL": "INFO",
        "LOG_FORMAT": "text",
    }


class _Progress:
    """One status line every few seconds, on stderr (the accounting goes to stdout)."""

    def __init__(
        self,
        started: float,
        total: int,
        admin_url: str,
        parts: tuple[Sender, OutputCollector, ChaosLLMServer, FaultInjector],
    ) -> None:
        self.started, self.total, self.admin_url = started, total, admin_url
        self.sender, self.outputs, self.llm, self.injector = parts
        self._last = 0.0

    def tick(self, force: bool = False) -> None:
        now = time.time()
        if not force and now - self._last < PROGRESS_EVERY_S:
            return
        self._last = now
        counts = self.outputs.counts()
        calls = self.llm.calls()
        faulted = sum(fault_of(c.behaviour) is not None for c in calls)
        states = invocation_states(self.admin_url, timeout=2)
        busy = (
            "unreachable"
            if states is None
            else ", ".join(f"{k} {v}" for k, v in sorted(states.items()) if k != "completed") or "idle"
        )
        _say(
            f"[chaos +{now - self.started:4.0f}s] sent {self.sender.queued}/{self.total}  "
            f"outputs: tables {counts.get('table', 0)}, dead letters {counts.get('dead_letter', 0)}  "
            f"llm calls {len(calls)} ({faulted} faulted)  "
            f"process faults {len(self.injector.done_events())}  restate: {busy}"
        )


def _quiescent(sent_ids: set[str], outputs: OutputCollector, admin_url: str) -> bool:
    if not sent_ids <= outputs.ids():
        return False
    states = invocation_states(admin_url)
    return states is not None and all(n == 0 for status, n in states.items() if status != "completed")


def run(config: ChaosConfig) -> Accounting:
    """Run the soak and return its accounting. Raises on infrastructure failures (stack, sending)."""
    planned = build_inputs(
        config.reports, config.seed, config.poison_rate, config.max_message_bytes, config.publish_crashes
    )
    schedule = config.schedule()
    _say(
        f"chaos: seed {config.seed}, {config.reports} reports ({sum(p.kind != 'valid' for p in planned)} poison, "
        f"{config.publish_crashes} publish crashes), sent over {config.send_window:.0f}s; LLM fault rates "
        f"{config.rates.model_dump()}; process faults: " + ", ".join(f"{f.component}@{f.at_s:.0f}s" for f in schedule)
    )
    llm = ChaosLLMServer(config.seed, config.rates, hang_seconds=config.llm_timeout + 1, latency=config.llm_latency)
    llm.start()
    stack_config = StackConfig.for_tests(offset=config.stack_offset)
    stack = Stack(stack_config, log=lambda line: _say(f"[stack] {line}"))
    try:
        return _run(config, planned, schedule, llm, stack)
    finally:
        if not config.keep_stack:
            stack.down()
        llm.stop()


def _run(
    config: ChaosConfig,
    planned: list[PlannedInput],
    schedule: list[ProcessFault],
    llm: ChaosLLMServer,
    stack: Stack,
) -> Accounting:
    cfg = stack.cfg
    stack.down()
    shutil.rmtree(cfg.run_dir, ignore_errors=True)  # fresh data: the accounting reads whole topics
    stack.worker_env = worker_env(config, llm, cfg.run_dir)
    _say(f"[stack] up in {stack.up():.1f}s ({cfg.run_dir})")

    outputs = OutputCollector(cfg.kafka_bootstrap).start()
    sender = Sender(cfg.kafka_bootstrap)
    started = time.time()
    injector = FaultInjector(
        stack, schedule, lambda: journaled_response_ids(cfg.admin_url), log=lambda line: _say(f"[fault] {line}")
    ).start(started)
    progress = _Progress(started, len(planned), cfg.admin_url, (sender, outputs, llm, injector))
    tick = progress.tick
    try:
        sender.send(planned, config.send_window, tick)
        _say(f"[chaos] all {len(sender.sent)} records acknowledged at +{time.time() - started:.0f}s")
        while not injector.wait_schedule(1.0):
            tick()
        deadline = max(time.time(), injector.last_fault_end() or 0.0) + config.drain_timeout
        sent_ids = {s.report_id for s in sender.sent}
        while time.time() < deadline and not _quiescent(sent_ids, outputs, cfg.admin_url):
            tick()
            time.sleep(1.0)
        time.sleep(SETTLE_S)
        quiet = _quiescent(sent_ids, outputs, cfg.admin_url)
        _say(f"[chaos] {'quiescent' if quiet else 'drain timeout reached'} at +{time.time() - started:.0f}s")
        progress.tick(force=True)
    finally:
        injector.stop()
        outputs.stop()

    states = invocation_states(cfg.admin_url) or {}
    unfinished = {k: v for k, v in states.items() if k != "completed"}
    if unfinished:
        _say(f"[chaos] Restate invocations not completed: {unfinished}")
    calls = [LLMCall.of(c, (f.value if (f := fault_of(c.behaviour)) is not None else None)) for c in llm.calls()]
    result = account(
        sender.sent,
        outputs.records(),
        calls,
        injector.done_events(),
        step_max_attempts=config.step_max_attempts,
        llm_fault_rate=config.rates.total,
        journaled_before_kills=injector.journal_snapshot(),
    )
    _save(cfg.run_dir / "chaos", config, result, calls, sender, outputs, injector.journal_snapshot())
    return result


def _save(
    directory: Path,
    config: ChaosConfig,
    result: Accounting,
    calls: list[LLMCall],
    sender: Sender,
    outputs: OutputCollector,
    journaled_before_kills: set[str],
) -> None:
    """Everything needed to investigate a failed run after the stack is gone."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(config.model_dump_json(indent=2))
    (directory / "accounting.json").write_text(result.model_dump_json(indent=2))
    (directory / "calls.jsonl").write_text("".join(c.model_dump_json() + "\n" for c in calls))
    (directory / "sent.jsonl").write_text("".join(s.model_dump_json() + "\n" for s in sender.sent))
    (directory / "journaled_before_kills.json").write_text(json.dumps(sorted(journaled_before_kills)))
    (directory / "outputs.jsonl").write_text("".join(o.model_dump_json() + "\n" for o in outputs.records()))
    _say(f"[chaos] details in {directory}: " + json.dumps(sorted(p.name for p in directory.iterdir())))
