"""`lapo eval`: Pass@1 and reasoning tokens, per difficulty level, on a checkpoint or endpoint.

    lapo eval --model models/base --out runs/eval/base.json
    lapo eval --endpoint http://127.0.0.1:8000/v1 --model lapo --out runs/eval/served.json

Samples come from `lapo.evaluation.backends` (in-process vLLM, or any OpenAI-compatible
server), are scored by `lapo.checker` (the same checker the rewards use) and counted by
`lapo.protocol`; `lapo.evaluation.report` writes REPORT.json, .md and .png.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import typer

from lapo.adapters import ADAPTER_CONFIG, is_adapter
from lapo.evaluation import report as report_mod
from lapo.evaluation.backends import EndpointSampler, EngineSampler, Sample, SamplingSettings
from lapo.evaluation.data import MATH_INSTRUCTION, EvalItem, load_items, takes_instruction

logger = logging.getLogger(__name__)


@dataclass
class EvalSettings:
    data: str = "synthetic"
    limit: int | None = None
    per_level: int = 20  # synthetic: held-out problems per level
    k: int = 4
    temperature: float = 0.6  # the paper's evaluation settings
    top_p: float = 0.95
    max_tokens: int = 512
    budget: int | None = None
    seed: int = 0
    concurrency: int = 16
    # The line after a benchmark's or a data file's question (None: the \boxed{} instruction;
    # "": none). The synthetic and reasoning-gym tasks write their own prompts. Resolved here,
    # so a report records the instruction its prompts carried.
    instruction: str | None = None

    def __post_init__(self) -> None:
        if takes_instruction(self.data):
            if self.instruction is None:
                self.instruction = MATH_INSTRUCTION
        elif self.instruction:
            raise ValueError(f"--instruction applies to benchmarks and data files; {self.data!r} "
                             "writes its own prompts")


def eval_items(settings: EvalSettings) -> list[EvalItem]:
    return load_items(settings.data, settings.limit, settings.seed, settings.per_level,
                      settings.instruction or "")


async def collect(sampler, settings: EvalSettings, progress: bool = True,
                  items: list[EvalItem] | None = None) -> list[Sample]:
    """Samples for ``items`` (default: read from ``settings.data``)."""
    from tqdm.auto import tqdm

    items = eval_items(settings) if items is None else items
    s = SamplingSettings(settings.k, settings.temperature, settings.top_p, settings.max_tokens,
                         settings.seed, settings.budget)
    sem = asyncio.Semaphore(settings.concurrency)
    bar = tqdm(total=len(items), desc=f"eval {settings.data}", unit="problem",
               disable=not progress)

    async def one(index: int, item):
        async with sem:
            out = await sampler.sample(item, s, index)
        bar.update(1)
        return out

    try:
        groups = await asyncio.gather(*(one(i, it) for i, it in enumerate(items)))
    finally:
        bar.close()
    return [x for g in groups for x in g]


def _check_checkpoint(model: str | Path) -> None:
    if not (Path(model, "config.json").is_file() or is_adapter(model)):
        raise FileNotFoundError(f"no checkpoint at {model} (neither config.json nor "
                                f"{ADAPTER_CONFIG})")


async def evaluate_model(model: str, settings: EvalSettings, progress: bool = True,
                         items: list[EvalItem] | None = None, engine=None) -> dict:
    """Evaluate a checkpoint folder (a full checkpoint, or a LoRA adapter served on its base)
    in the in-process engine; returns the report dict.

    The data is read before the engine starts, so a bad data file fails in seconds.
    ``engine``: the engine's `lapo.engine.EngineConfig` (default: float32, eager, room for
    ``max_tokens`` plus 512 prompt tokens).
    """
    reports = await evaluate_models({"model": model}, settings, progress, items,
                                    None if engine is None else (lambda _: engine))
    return reports["model"]


async def evaluate_models(models: dict[str, str | Path], settings: EvalSettings,
                          progress: bool = True, items: list[EvalItem] | None = None,
                          engine_for: Callable[[Path], object] | None = None) -> dict[str, dict]:
    """Evaluate several checkpoints on the same items, in order; returns a report per name.

    Checkpoints one engine can serve (a base and LoRA adapters of it) share that engine: the
    pipeline's stages of a LoRA recipe start one engine, not one each. ``engine_for(path)``:
    the `lapo.engine.EngineConfig` of an engine for ``path``.
    """
    items = eval_items(settings) if items is None else items
    for model in models.values():
        _check_checkpoint(model)
    reports: dict[str, dict] = {}
    sampler: EngineSampler | None = None
    try:
        for name, model in models.items():
            if sampler is not None and sampler.serves(model):
                sampler.use(model)
            else:
                if sampler is not None:
                    sampler.close()
                sampler = None  # a failed start must not close the old engine twice
                sampler = EngineSampler(model, max_model_len=max(2048, settings.max_tokens + 512),
                                        engine=engine_for(Path(model)) if engine_for else None)
            samples = await collect(sampler, settings, progress, items)
            reports[name] = report_mod.summarize(samples, {**asdict(settings), "model": str(model)})
    finally:
        if sampler is not None:
            sampler.close()
    return reports


async def evaluate_endpoint(endpoint: str, model: str, settings: EvalSettings,
                            tokenizer: str | None = None, progress: bool = True,
                            items: list[EvalItem] | None = None) -> dict:
    items = eval_items(settings) if items is None else items
    sampler = EndpointSampler(endpoint, model, tokenizer_path=tokenizer)
    try:
        await sampler.check_reachable()
        samples = await collect(sampler, settings, progress, items)
    finally:
        await sampler.aclose()
    return report_mod.summarize(
        samples, {**asdict(settings), "endpoint": endpoint, "model": model}
    )


def run_eval_cli(settings: EvalSettings, out: Path, model: str | None,
                 endpoint: str | None) -> dict:
    if endpoint is None and model is None:
        raise typer.BadParameter("give --model PATH, or --endpoint URL with --model NAME")
    try:
        items = eval_items(settings)  # a bad data file fails here, before any engine starts
        if endpoint:
            tokenizer = model if model and Path(model, "tokenizer.json").is_file() else None
            rep = asyncio.run(evaluate_endpoint(endpoint, model or "default", settings,
                                                tokenizer, items=items))
        else:
            rep = asyncio.run(evaluate_model(model, settings, items=items))
    except (FileNotFoundError, ConnectionError, ValueError) as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc
    report_mod.write(rep, out, title=f"lapo eval: {model or endpoint}")
    typer.echo(report_mod.markdown(rep, f"lapo eval: {model or endpoint}"))
    typer.echo(f"wrote {out}, {out.with_suffix('.md')}, {out.with_suffix('.png')}")
    return rep
