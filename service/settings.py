"""Service settings: one pydantic-settings object; every field also from ``LAPO_<NAME>``."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from lapo.paths import default_model


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LAPO_", extra="ignore")

    model: Path = Field(default_factory=default_model, description="checkpoint folder")
    served_model_name: str | None = Field(None, description="name clients send (default: "
                                          "the checkpoint folder's name)")
    host: str = "127.0.0.1"
    port: int = 8000

    # Engine
    max_model_len: int = 2048
    max_num_seqs: int = 64
    enforce_eager: bool = True
    dtype: str = "float32"
    # vLLM tensor parallelism for models larger than one GPU.
    tensor_parallel_size: int = Field(1, ge=1)
    # LoRA adapters (PEFT) on the served base swap into the running engine.
    enable_lora: bool = False
    max_lora_rank: int = 8

    # Request limits (400 beyond them, naming the limit and the value)
    default_max_tokens: int = 512
    max_n: int = 8
    max_messages: int = 64
    max_message_chars: int = 32_000
    max_stop: int = 4
    max_reasoning_budget: int = 8192

    # Budgets
    effort_factors: dict[str, float] = {"low": 0.5, "medium": 1.0, "high": 1.5}
    # Hard cap: reasoning may run to budget * (1 + slack_ratio) + slack_tokens before
    # </think> is forced.
    hard_slack_ratio: float = 0.25
    hard_slack_tokens: int = 8
    # Tokens the model may spend writing its own statement (effort mode's first phase).
    statement_max_tokens: int = 24

    # Shadow baseline (measured tokens saved): run this fraction of requests, after the
    # response and off its path, on the checkpoint LAPO replaced.
    shadow_model: Path | None = None
    shadow_fraction: float = Field(0.0, ge=0.0, le=1.0)
    shadow_concurrency: int = Field(2, ge=1)

    # Hot-swap: checkpoints must live under this folder (default: the models folder).
    model_root: Path | None = None
    swap_strategy: str = Field("side_by_side", pattern="^(side_by_side|replace)$")
    drain_timeout_s: float = 120.0

    # Security
    # Comma-separated in LAPO_API_KEYS; empty: no auth.
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    admin_key: SecretStr | None = None
    log_prompts: bool = False

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value):
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @property
    def model_name(self) -> str:
        return self.served_model_name or Path(self.model).name


@lru_cache
def get_settings() -> Settings:
    return Settings()
