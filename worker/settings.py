"""The one settings object, read once from the environment, for the worker, every command-line
tool and devstack. Each field is an environment variable of the same name, upper-cased (the table
in README.md, "Configuration").

Kafka client properties use librdkafka names: any variable `KAFKA_<NAME>` becomes the property
`<name>` with `_` turned into `.` (for example `KAFKA_BOOTSTRAP_SERVERS` -> `bootstrap.servers`,
`KAFKA_SASL_PASSWORD` -> `sasl.password`). Secret values are held as `SecretStr`: they show as
`***` in reprs and logs and are revealed only in the dict handed to a Kafka client.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Mapping
from contextvars import ContextVar
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from worker.models import Step

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
KAFKA_PREFIX = "KAFKA_"
# Properties whose values must never be printed (besides any whose name says password or secret).
SECRET_KAFKA_PROPERTIES = frozenset(
    {
        "sasl.password",
        "ssl.key.password",
        "ssl.keystore.password",
        "sasl.oauthbearer.client.secret",
        "sasl.oauthbearer.config",
        "ssl.key.pem",
    }
)


def is_secret_property(name: str) -> bool:
    return name in SECRET_KAFKA_PROPERTIES or "password" in name or "secret" in name


def redact_kafka_properties(props: Mapping[str, str]) -> dict[str, str]:
    """A copy safe to log: secret values replaced."""
    return {k: ("***" if is_secret_property(k) else v) for k, v in props.items()}


def describe_kafka(props: Mapping[str, str]) -> str:
    """A one-line, secret-free description of a client config, for logs and --verbose."""
    return " ".join(f"{k}={v}" for k, v in sorted(redact_kafka_properties(props).items()))


class KafkaProperties(BaseModel):
    """librdkafka client properties from `KAFKA_*` variables; secret values held as SecretStr."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    plain: dict[str, str] = {"bootstrap.servers": DEFAULT_BOOTSTRAP}
    secret: dict[str, SecretStr] = {}

    @classmethod
    def of(cls, props: Mapping[str, str]) -> KafkaProperties:
        """From librdkafka properties; secret ones are recognised by name."""
        plain = {"bootstrap.servers": DEFAULT_BOOTSTRAP}
        plain.update({k: v for k, v in props.items() if not is_secret_property(k)})
        return cls(plain=plain, secret={k: SecretStr(v) for k, v in props.items() if is_secret_property(k)})

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> KafkaProperties:
        return cls.of(
            {
                name[len(KAFKA_PREFIX) :].lower().replace("_", "."): value
                for name, value in environ.items()
                if name.startswith(KAFKA_PREFIX) and len(name) > len(KAFKA_PREFIX)
            }
        )

    @property
    def bootstrap_servers(self) -> str:
        return self.plain["bootstrap.servers"]

    def with_bootstrap(self, servers: str) -> KafkaProperties:
        return self.model_copy(update={"plain": {**self.plain, "bootstrap.servers": servers}})

    def client_config(self) -> dict[str, str]:
        """The properties for a Kafka client's constructor, secrets revealed: a new dict each call. Never log it."""
        return {**self.plain, **{k: v.get_secret_value() for k, v in self.secret.items()}}


def client_config(bootstrap_server: str | None = None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """`base` (default: the settings' Kafka properties) plus an optional bootstrap override, as a new dict."""
    props = dict(get_settings().kafka.client_config() if base is None else base)
    if bootstrap_server:
        props["bootstrap.servers"] = bootstrap_server
    return props


# The environment Settings() reads: this process's, unless settings_from() names another.
_environ: ContextVar[Mapping[str, str] | None] = ContextVar("settings_environ", default=None)


class _Environment(PydanticBaseSettingsSource):
    """Field values from environment variables: `NAME` for a field `name`, `KAFKA_*` for `kafka`.

    Empty values count as unset (except Kafka properties, which librdkafka gets as given).
    """

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # __call__ reads every field at once

    def __call__(self) -> dict[str, Any]:
        environ = _environ.get()
        return environment_values(os.environ if environ is None else environ)


def environment_values(environ: Mapping[str, str]) -> dict[str, Any]:
    """What `environ` sets for the settings' fields (unvalidated)."""
    fields = Settings.model_fields.keys() - {"kafka"}
    values: dict[str, Any] = {name.lower(): v for name, v in environ.items() if v and name.lower() in fields}
    values["kafka"] = KafkaProperties.from_environ(environ)
    return values


BUDGET_SHARD_REQUESTS_PER_MINUTE = 200
"""Default share of one LLMBudget object (see Settings.budget_shards)."""
MAX_AUTO_BUDGET_SHARDS = 16


class ModelBudget(BaseModel):
    """One model's budget per rolling 60 s window; None = unlimited."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    requests_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_minute: int | None = Field(default=None, ge=1)
    prompt_tokens_per_minute: int | None = Field(default=None, ge=1)
    completion_tokens_per_minute: int | None = Field(default=None, ge=1)

    @property
    def limited(self) -> bool:
        return any(v is not None for v in self.model_dump().values())

    @property
    def counts_tokens(self) -> bool:
        return any(v is not None for v in (self.tokens_per_minute, self.prompt_tokens_per_minute,
                                           self.completion_tokens_per_minute))  # fmt: skip

    @property
    def counts_completions(self) -> bool:
        return self.tokens_per_minute is not None or self.completion_tokens_per_minute is not None


class Settings(BaseSettings):
    """The configuration. Every field maps to an environment variable of the same name (upper case)."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", populate_by_name=True, env_ignore_empty=True)

    # Kafka client properties (KAFKA_*), for every client: the worker's producer, the tools, setup.
    kafka: KafkaProperties = KafkaProperties()

    # Topics.
    reports_topic: str = "reports"
    tables_topic: str = "tables"
    dead_letter_topic: str = "reports.dlq"

    # Input validation.
    max_message_bytes: int = Field(default=64 * 1024, gt=0, description="Largest accepted report text, in UTF-8 bytes.")
    max_report_id_bytes: int = Field(default=1024, gt=0, description="Longest accepted report id, in UTF-8 bytes.")
    verify_kafka_source: bool = Field(
        default=False,
        description="Read back the Kafka record an invocation claims to come from and refuse it unless its value "
        "matches: for a Restate whose HTTP ingress is open to callers who could forge the kafka.* headers.",
    )

    # Output records: the largest record (key + value) published to each output topic.
    output_max_record_bytes: int | None = Field(
        default=None,
        gt=0,
        description="Default: learned from each output topic's max.message.bytes, capped by the producer's "
        "message.max.bytes.",
    )

    # Graceful stop: after SIGTERM, how long running steps may take to finish and be journaled.
    worker_drain_timeout: float = Field(default=10.0, ge=0, description="Seconds.")

    # Bounded retries of the three LLM steps (Restate owns them, see worker/service.py).
    step_max_attempts: int = Field(default=3, ge=1)
    step_retry_initial_interval: float = Field(
        default=0.5, gt=0, description="Seconds before the first retry of a step."
    )
    step_retry_max_interval: float = Field(
        default=10.0, gt=0, description="Upper bound of a step's retry delay, seconds."
    )

    # Retryable failures outside the step bounds (worker unreachable, Kafka refusing
    # the publish): back off up to the max interval, then pause the invocation.
    invocation_retry_max_attempts: int = Field(default=40, ge=1)
    invocation_retry_max_interval: float = Field(default=30.0, gt=0, description="Seconds.")

    # LLM provider.
    llm_provider: Literal["openai", "local", "offline"] | None = Field(
        default=None,
        description="openai, local or offline; default: openai when OPENAI_API_KEY is set, else offline.",
    )
    llm_model: str = "gpt-4o-mini"
    llm_model_extract: str | None = None
    llm_model_sort: str | None = None
    llm_model_format: str | None = None
    llm_temperature: float | None = Field(
        default=None, ge=0, le=2, description="Sampling temperature; default: the server's (0 for local)."
    )
    llm_timeout_seconds: float = Field(default=60.0, gt=0)
    llm_max_concurrency: int = Field(default=100, ge=1, description="LLM calls in flight per worker process.")
    llm_price_prompt_per_1k: float | None = Field(default=None, ge=0)
    llm_price_completion_per_1k: float | None = Field(default=None, ge=0)
    llm_max_tokens: int | None = Field(
        default=None, ge=1, description="The most tokens one call may generate, sent as max_tokens."
    )

    # Flow control (worker/budget): budgets per rolling 60 s window for each provider + endpoint + model,
    # shared by every worker process. Unset = unlimited; with no budget nothing is asked.
    llm_requests_per_minute: int | None = Field(default=None, ge=1)
    llm_tokens_per_minute: int | None = Field(default=None, ge=1, description="Prompt + completion tokens.")
    llm_prompt_tokens_per_minute: int | None = Field(default=None, ge=1)
    llm_completion_tokens_per_minute: int | None = Field(default=None, ge=1)
    llm_budgets: dict[str, ModelBudget] = Field(
        default_factory=dict,
        description='Budgets per model, as JSON: {"MODEL": {"requests_per_minute": N, ...}}; '
        "an entry replaces the LLM_*_PER_MINUTE budgets for that model ({} = unlimited).",
    )
    llm_budget_window_seconds: int = Field(
        default=60,
        description="The rolling window the budgets hold in (a divisor of 60); per-minute budgets are scaled to "
        "it, e.g. 10 for providers that enforce per-minute limits over 10 s windows (Azure OpenAI).",
    )
    llm_budget_send_within_seconds: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description="How long a call granted by its budget may wait for one of the process's LLM_MAX_CONCURRENCY "
        "slots before it returns the grant unsent and asks again. It also bounds how long the grant of an attempt "
        "a crash interrupted keeps counting (it may have been sent until then).",
    )
    llm_budget_shards: int | None = Field(
        default=None,
        ge=1,
        description="LLMBudget objects that share a model's budget (each keeps its share); default: one per "
        f"{BUDGET_SHARD_REQUESTS_PER_MINUTE} requests per minute, at most {MAX_AUTO_BUDGET_SHARDS}; one with a "
        "token budget.",
    )
    llm_budget_completion_count: Literal["usage", "max_tokens"] = Field(
        default="usage",
        description="What a finished call's completion counts: the usage the provider reported, or max_tokens "
        "(for providers that charge the limit, like OpenAI's token rate limits).",
    )
    llm_budget_bytes_per_token: float = Field(
        default=1.0,
        gt=0,
        description="Prompt bytes per token for the estimate a call reserves until its usage is known; "
        "1 is an upper bound for byte-level tokenizers.",
    )
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None

    # The fallback chain of each step (worker/chain.py): the provider's model, then an optional
    # fallback model, then code where code is exact.
    extract_with: Literal["llm", "code"] = "llm"
    sort_with: Literal["llm", "code"] = "llm"
    format_with: Literal["llm", "code"] = "llm"
    extract_fallback: Literal["code", "none"] = Field(
        default="none", description="code: the offline extractor (a heuristic) when the models fail."
    )
    sort_fallback: Literal["code", "none"] = "code"
    format_fallback: Literal["code", "none"] = "code"
    llm_fallback_model: str | None = Field(default=None, description="A second model tried when the first fails.")
    llm_fallback_base_url: str | None = Field(default=None, description="Its endpoint; default: the provider's.")
    llm_fallback_api_key: SecretStr | None = Field(default=None, description="Its key; default: the provider's.")

    # The local LLM (LLM_PROVIDER=local): llama.cpp's OpenAI-compatible server, which the local
    # stack starts (devstack/llamacpp.py) with the model below; the worker calls it at LOCAL_LLM_URL.
    local_llm_url: str = "http://127.0.0.1:8090/v1"
    local_llm_model: str = Field(
        default="local", description="The name the local server answers to (set by the stack)."
    )
    local_model_path: str | None = Field(default=None, description="A GGUF file to serve.")
    local_model: str | None = Field(default=None, description="hf:OWNER/REPO/FILE.gguf, downloaded once.")
    local_llm_threads: int | None = Field(default=None, ge=1, description="CPU threads; default cores - 1.")
    local_llm_parallel: int = Field(default=2, ge=1, description="Requests the server decodes together.")
    local_llm_ctx: int = Field(default=4096, ge=512, description="Context tokens per parallel request.")

    # Serving.
    worker_bind: str = "0.0.0.0:9080"
    worker_processes: int | None = Field(
        default=None,
        ge=1,
        le=9,
        description="Worker processes the local stack (devstack) runs behind one balancer; "
        "default 1 (single profile) or 2 (cluster profile). Each has its own LLM_MAX_CONCURRENCY.",
    )
    restate_identity_keys: str = Field(
        default="", description="Comma-separated Restate request-identity public keys (publickeyv1_...)."
    )
    restate_identity_keys_file: Path | None = Field(
        default=None,
        description="A file of request-identity public keys (comma- or line-separated), e.g. the one "
        "`python -m devstack identity` writes; added to RESTATE_IDENTITY_KEYS.",
    )

    # Logging.
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"

    # Where things are, for setup and the operating tools.
    restate_admin_url: str = Field(default="http://127.0.0.1:9070", description="Restate's admin API (and UI).")
    worker_url: str = Field(default="http://127.0.0.1:9080", description="Where Restate reaches the worker.")
    restate_kafka_cluster: str = Field(default="local", description="The Kafka cluster's name in Restate.")
    restate_kafka_bootstrap: str | None = Field(
        default=None, description="The brokers as Restate sees them; default: KAFKA_BOOTSTRAP_SERVERS."
    )
    subscription_group_id: str = Field(default="report-chain", description="The subscription's consumer group.")
    reports_partitions: int = Field(default=4, ge=1, description="Partitions setup gives a new reports topic.")
    topic_replication_factor: int | None = Field(
        default=None, ge=1, description="Replicas of each topic setup creates; default: the brokers' default."
    )

    # Fault injection, for the recovery tests and chaos runs only (worker/faults.py).
    fault_crash_after_publish: str | None = Field(
        default=None, description="Crash once per report id with this prefix, after its table was published."
    )
    fault_state_dir: Path | None = Field(default=None, description="Where crashes already done are remembered.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, _Environment(settings_cls)

    @field_validator("llm_budgets", mode="before")
    @classmethod
    def _budgets_from_json(cls, value: object) -> object:
        return json.loads(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _budget_window(self) -> Settings:
        window = self.llm_budget_window_seconds
        if window < 1 or 60 % window:
            raise ValueError(f"LLM_BUDGET_WINDOW_SECONDS must divide 60 (1, 2, 3, 4, 5, 6, 10, ..., 60), not {window}")
        for budget in [self.default_budget, *self.llm_budgets.values()]:
            for name, per_minute in budget.model_dump().items():
                shards = self.budget_shards(budget)
                if per_minute is not None and per_minute * window < 60 * shards:
                    raise ValueError(
                        f"{name}={per_minute} is less than one per {window} s window and budget shard ({shards})"
                    )
        return self

    @model_validator(mode="after")
    def _completion_bound(self) -> Settings:
        budgets = [self.default_budget, *self.llm_budgets.values()]
        if self.llm_max_tokens is None and any(b.counts_completions for b in budgets):
            raise ValueError(
                "a token budget that counts completions (LLM_TOKENS_PER_MINUTE, LLM_COMPLETION_TOKENS_PER_MINUTE) "
                "needs LLM_MAX_TOKENS: the most a call may generate, which the budget reserves before each call"
            )
        return self

    @model_validator(mode="after")
    def _choose_provider(self) -> Settings:
        if self.llm_provider is None:
            chosen = "openai" if self.openai_api_key else "offline"
            object.__setattr__(self, "llm_provider", chosen)
        return self

    @property
    def provider(self) -> Literal["openai", "local", "offline"]:
        assert self.llm_provider is not None
        return self.llm_provider

    def model_for(self, step: Step) -> str:
        override = {
            Step.EXTRACT: self.llm_model_extract,
            Step.SORT: self.llm_model_sort,
            Step.FORMAT: self.llm_model_format,
        }
        return override.get(step) or self.llm_model

    @property
    def default_budget(self) -> ModelBudget:
        return ModelBudget(
            requests_per_minute=self.llm_requests_per_minute,
            tokens_per_minute=self.llm_tokens_per_minute,
            prompt_tokens_per_minute=self.llm_prompt_tokens_per_minute,
            completion_tokens_per_minute=self.llm_completion_tokens_per_minute,
        )

    def budget_shards(self, budget: ModelBudget) -> int:
        """How many LLMBudget objects share this budget (each decides alone: one object grants a few dozen
        calls a second on a small machine)."""
        if self.llm_budget_shards is not None:
            return self.llm_budget_shards
        if budget.requests_per_minute is None or budget.counts_tokens:
            # A token budget stays whole: a call larger than a shard's share could only run alone in its shard.
            return 1
        shards = math.ceil(budget.requests_per_minute / BUDGET_SHARD_REQUESTS_PER_MINUTE)
        return max(1, min(MAX_AUTO_BUDGET_SHARDS, shards))

    @property
    def any_budget(self) -> bool:
        """Whether any model has a budget (LLM_*_PER_MINUTE or LLM_BUDGETS)."""
        return any(b.limited for b in (self.default_budget, *self.llm_budgets.values()))

    def budget_for(self, model: str) -> ModelBudget:
        """The budget of one model: its LLM_BUDGETS entry, else the LLM_*_PER_MINUTE ones."""
        return self.llm_budgets.get(model, self.default_budget)

    @property
    def identity_keys(self) -> list[str]:
        """The request-identity public keys: RESTATE_IDENTITY_KEYS, plus those in RESTATE_IDENTITY_KEYS_FILE."""
        listed = self.restate_identity_keys
        if self.restate_identity_keys_file is not None:
            try:
                listed += "," + self.restate_identity_keys_file.read_text().replace("\n", ",")
            except OSError as exc:
                raise ValueError(f"RESTATE_IDENTITY_KEYS_FILE cannot be read: {exc.strerror}") from None
        return [k.strip() for k in listed.split(",") if k.strip()]

    @property
    def restate_kafka(self) -> KafkaProperties:
        """How Restate reaches Kafka: the same properties, at RESTATE_KAFKA_BOOTSTRAP when set."""
        servers = self.restate_kafka_bootstrap
        return self.kafka if servers is None else self.kafka.with_bootstrap(servers)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()


def settings_from(environ: Mapping[str, str]) -> Settings:
    """Settings read from `environ` instead of this process's environment (e.g. the worker's, by the local stack)."""
    token = _environ.set(environ)
    try:
        return Settings()
    finally:
        _environ.reset(token)


def settings_or_exit(prog: str) -> Settings:
    """The settings, for a command-line tool: an invalid environment ends it with exit code 2, saying what is wrong."""
    try:
        return get_settings()
    except ValidationError as exc:
        # Names and messages only: an input value may be a secret.
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
        print(f"{prog}: invalid configuration: {problems}", file=sys.stderr)
        raise SystemExit(2) from None
