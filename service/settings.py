"""Service settings: one pydantic-settings object; every field also from ``LAPO_<NAME>``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from lapo.engine import EngineConfig
from lapo.paths import default_model
from lapo.service.budget import BudgetLimits

# The engine settings a server exposes as LAPO_* variables (the rest keep EngineConfig's).
ENGINE_FIELDS = ("max_model_len", "max_num_seqs", "enforce_eager", "dtype",
                 "tensor_parallel_size", "enable_lora", "max_lora_rank", "compact_json",
                 "distributed_executor_backend")
_ENGINE = EngineConfig(model="")
_LIMITS = BudgetLimits()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LAPO_", extra="ignore")

    model: Path = Field(default_factory=default_model, description="checkpoint folder")
    served_model_name: str | None = Field(None, description="name clients send (default: "
                                          "the checkpoint folder's name)")
    host: str = "127.0.0.1"
    port: int = 8000

    # Engine: the defaults and their reasons are `lapo.engine.EngineConfig`'s (defined there
    # only). tensor_parallel_size > 1 for models larger than one GPU; enable_lora lets PEFT
    # adapters on the served base swap into the running engine.
    max_model_len: int = _ENGINE.max_model_len
    max_num_seqs: int | None = _ENGINE.max_num_seqs
    enforce_eager: bool = _ENGINE.enforce_eager
    dtype: str = _ENGINE.dtype
    tensor_parallel_size: int = Field(_ENGINE.tensor_parallel_size, ge=1)
    enable_lora: bool = _ENGINE.enable_lora
    max_lora_rank: int = _ENGINE.max_lora_rank
    compact_json: bool = _ENGINE.compact_json
    distributed_executor_backend: str = Field(_ENGINE.distributed_executor_backend,
                                              pattern="^(auto|mp|uni)$")

    # Request limits (400 beyond them, naming the limit and the value)
    default_max_tokens: int = 512
    max_n: int = 8
    max_messages: int = 64
    max_message_chars: int = 32_000
    max_stop: int = 4
    max_reasoning_budget: int = 8192
    max_tools: int = Field(128, ge=1)  # function tools in one request

    # Tool calling: the vLLM tool parser (a name vLLM's ToolParserManager knows) that reads
    # tool calls out of the model's own answer under tool_choice "auto".
    tool_call_parser: str = "hermes"

    # Budgets (the meaning of each limit: `lapo.service.budget.BudgetLimits`)
    effort_factors: dict[str, float] = {"low": 0.5, "medium": 1.0, "high": 1.5}
    hard_slack_ratio: float = _LIMITS.hard_slack_ratio
    hard_slack_tokens: int = _LIMITS.hard_slack_tokens
    statement_max_tokens: int = _LIMITS.statement_max_tokens

    # Shadow baseline (measured tokens saved): run this fraction of requests, after the
    # response and off its path, on the checkpoint LAPO replaced.
    shadow_model: Path | None = None
    shadow_fraction: float = Field(0.0, ge=0.0, le=1.0)
    shadow_concurrency: int = Field(2, ge=1)

    # Hot-swap: checkpoints must live under this folder (default: the models folder).
    model_root: Path | None = None
    swap_strategy: str = Field("side_by_side", pattern="^(side_by_side|replace)$")
    drain_timeout_s: float = 120.0

    # Back-pressure: at most max_concurrency requests run; up to max_queue more wait for a
    # slot; beyond that, 429 with Retry-After (and /ready answers 503 "saturated").
    max_concurrency: int = Field(64, ge=1)
    max_queue: int = Field(256, ge=0)
    # Which waiting request gets a freed slot (only matters when every slot is busy):
    # "fcfs"; "declared", the shortest expected work first (the declared reasoning budget plus
    # the expected answer; `lapo.service.scheduling`); "random", the benchmark's control. A
    # request that has waited starvation_bound_s goes before every later arrival.
    scheduling: str = Field("fcfs", pattern="^(fcfs|declared|random)$")
    starvation_bound_s: float = Field(30.0, ge=0.0)
    retry_after_s: int = Field(2, ge=1)
    # Per request, queueing included: past it the engine request is aborted (504, or an
    # error event on a stream). 0 disables it.
    request_timeout_s: float = Field(600.0, ge=0.0)
    max_body_bytes: int = Field(1_048_576, ge=1024)

    # Engine faults: restart a dead engine up to engine_max_restarts times (backoff doubling
    # from engine_restart_backoff_s); past that the process exits non-zero (exit code 3) so an
    # orchestrator restarts it.
    engine_max_restarts: int = Field(3, ge=0)
    engine_restart_backoff_s: float = Field(1.0, ge=0.0)
    # Graceful shutdown: after SIGTERM, stop admitting (503) and let in-flight requests finish
    # for up to this long, then exit 0.
    shutdown_grace_s: float = Field(30.0, ge=0.0)

    # Security
    # Comma-separated in LAPO_API_KEYS; empty: no auth.
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    admin_key: SecretStr | None = None
    # Request logs never carry prompt text unless this is set (debugging only).
    log_prompts: bool = False
    # CORS is off unless origins are listed (comma-separated in LAPO_CORS_ORIGINS; "*" = any).
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)

    @field_validator("api_keys", "cors_origins", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @property
    def model_name(self) -> str:
        return self.served_model_name or Path(self.model).name

    @property
    def budget_limits(self) -> BudgetLimits:
        return BudgetLimits(self.hard_slack_ratio, self.hard_slack_tokens,
                            self.statement_max_tokens)

    def engine_config(self, path: Path, name: str) -> EngineConfig:
        """The engine for checkpoint ``path`` served as ``name``, with these settings."""
        return EngineConfig(model=str(path), served_model_name=name,
                            **{f: getattr(self, f) for f in ENGINE_FIELDS})
