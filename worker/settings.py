"""The one settings object, read from the environment.

Kafka client properties use librdkafka names: any variable `KAFKA_<NAME>` becomes
the property `<name>` with `_` turned into `.` (for example `KAFKA_BOOTSTRAP_SERVERS`
-> `bootstrap.servers`, `KAFKA_SASL_PASSWORD` -> `sasl.password`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.models import Step

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
# Properties whose values must never be printed.
SECRET_KAFKA_PROPERTIES = frozenset(
    {"sasl.password", "ssl.key.password", "ssl.keystore.password", "sasl.oauthbearer.client.secret"}
)


def kafka_properties(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """librdkafka properties from `KAFKA_*` environment variables (a new dict each call)."""
    env = os.environ if environ is None else environ
    props = {"bootstrap.servers": DEFAULT_BOOTSTRAP}
    for name, value in env.items():
        if name.startswith("KAFKA_") and len(name) > len("KAFKA_"):
            props[name[len("KAFKA_") :].lower().replace("_", ".")] = value
    return props


def redact_kafka_properties(props: Mapping[str, str]) -> dict[str, str]:
    """A copy safe to log: secret values replaced."""
    return {
        k: ("***" if k in SECRET_KAFKA_PROPERTIES or "password" in k or "secret" in k else v) for k, v in props.items()
    }


class Settings(BaseSettings):
    """Worker configuration. Every field maps to an environment variable of the same name (upper case)."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", populate_by_name=True, env_ignore_empty=True)

    # Topics.
    reports_topic: str = "reports"
    tables_topic: str = "tables"
    dead_letter_topic: str = "reports.dlq"

    # Input validation.
    max_message_bytes: int = Field(default=64 * 1024, gt=0, description="Largest accepted report text, in UTF-8 bytes.")

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
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None

    # The local LLM (LLM_PROVIDER=local): llama.cpp's OpenAI-compatible server, which the local
    # stack starts (devstack/llamacpp.py) with the model below; the worker calls it at LOCAL_LLM_URL.
    local_llm_url: str = "http://127.0.0.1:8090/v1"
    local_model_path: str | None = Field(default=None, description="A GGUF file to serve.")
    local_model: str | None = Field(default=None, description="hf:OWNER/REPO/FILE.gguf, downloaded once.")
    local_llm_threads: int | None = Field(default=None, ge=1, description="CPU threads; default cores - 1.")
    local_llm_parallel: int = Field(default=2, ge=1, description="Requests the server decodes together.")
    local_llm_ctx: int = Field(default=4096, ge=512, description="Context tokens per parallel request.")

    # Serving.
    worker_bind: str = "0.0.0.0:9080"
    restate_identity_keys: str = Field(
        default="", description="Comma-separated Restate request-identity public keys (publickeyv1_...)."
    )

    # Logging.
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"

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
    def identity_keys(self) -> list[str]:
        return [k.strip() for k in self.restate_identity_keys.split(",") if k.strip()]

    def kafka(self) -> dict[str, str]:
        """librdkafka properties for this process (a fresh dict; callers may add to it)."""
        return kafka_properties()


def settings_from(env: Mapping[str, str]) -> Settings:
    """Settings read from `env` instead of this process's environment (e.g. the worker's, by the local stack)."""
    fields = Settings.model_fields
    values = {name.lower(): value for name, value in env.items() if value and name.lower() in fields}
    return Settings.model_validate(values)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
