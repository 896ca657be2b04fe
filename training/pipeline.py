"""`lapo train --config FILE`: base -> stage 1 -> warm-up -> stage 2 -> evaluation.

Every stage writes ``<run>/<stage>/`` (a Hugging Face checkpoint) and, LAST, its
``manifest.json``; a stage whose manifest exists is skipped, so an interrupted run resumes
where it stopped. ``--only STAGE`` runs one stage (its inputs must exist).

Several ranks (one per GPU, or CPU ranks over gloo)::

    torchrun --nproc_per_node 2 -m lapo.cli train --config configs/tiny-test.toml --out DIR
    accelerate launch --config_file configs/accelerate-deepspeed-zero2.yaml \
        -m lapo.cli train --config configs/gpu-r1-distill-1.5b.toml

The trainer stages (base SFT, stage 1, the warm-up SFT, stage 2) run on every rank. Everything
else runs on the main process alone, the others waiting (`lapo.training.distributed.on_main`):
the warm-up's rollouts (one vLLM engine; its rows go through a file in ``<run>/work``), the
evaluation, every manifest and ``length_memory.json``, and publishing. Whether a stage is done
is the main process's answer, so every rank skips the same stages.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from pathlib import Path

from lapo.manifest import MANIFEST, checkpoint_hash, read_manifest, write_manifest
from lapo.paths import REPO_ROOT
from lapo.training import distributed
from lapo.training.config import (
    GRPO_STAGES,
    STAGES,
    ConfigError,
    PipelineConfig,
    load_config,
    to_dict,
    uses_cpu,
)
from lapo.training.grpo import batch_layout
from lapo.training.preflight import check_run

logger = logging.getLogger(__name__)


def _done(folder: Path) -> bool:
    """Whether the stage in ``folder`` is done, as the main process sees it (every rank gets
    the same answer even while the main process writes)."""
    return distributed.on_main((folder / MANIFEST).is_file, what=f"checking {folder}")


def _manifest(folder: Path, parent: Path | None = None, **fields) -> None:
    """Write ``folder``'s manifest on the main process: ``fields``, the run's world size and
    the lineage to ``parent`` (hashing it there, once)."""
    def write() -> None:
        lineage = _lineage(parent) if parent is not None else {}
        write_manifest(folder, world_size=distributed.world_size(), **lineage, **fields)

    distributed.on_main(write, what=f"the manifest of {folder}")


def _banner(name: str, text: str) -> None:
    logger.info("==== %s: %s", name, text)


def _lineage(parent: Path) -> dict:
    if (parent / MANIFEST).is_file():
        return {"parent": str(parent), "parent_hash": read_manifest(parent)["checkpoint_hash"]}
    return {"parent": str(parent), "parent_hash": checkpoint_hash(parent)}


def _base(cfg: PipelineConfig, run: Path) -> Path:
    if cfg.run.base_checkpoint and not cfg.run.make_reasoning_base:
        return Path(cfg.run.base_checkpoint)
    return run / "base"


def _adapter_fields(cfg: PipelineConfig, folder: Path) -> dict:
    """What a LoRA adapter's manifest names: the base it needs (path as configured, hash)."""
    from lapo.adapters import is_adapter

    if not is_adapter(folder):
        return {}
    base = Path(cfg.run.base_checkpoint)
    base_hash = (read_manifest(base)["checkpoint_hash"] if (base / MANIFEST).is_file()
                 else checkpoint_hash(base))
    return {"base_checkpoint": cfg.run.base_checkpoint, "base_checkpoint_hash": base_hash,
            "lora": {"r": cfg.lora.r, "alpha": cfg.lora.alpha,
                     "target_modules": list(cfg.lora.target_modules)}}


def run_base(cfg: PipelineConfig, run: Path) -> Path:
    from lapo.training.base import train_base

    out = run / "base"
    if cfg.run.base_checkpoint and cfg.run.make_reasoning_base:
        return run_reasoning_base(cfg, run)
    if cfg.run.base_checkpoint:
        _banner("base", f"using the given checkpoint {cfg.run.base_checkpoint}")
        return Path(cfg.run.base_checkpoint)
    if _done(out):
        return out
    _banner("base", "supervised overthinking traces (TRL SFTTrainer)")
    stats = train_base(cfg.base, out, run / "work")
    distributed.free_memory()
    _manifest(out, kind="lapo-base", stage="base", description=(
        "Tiny Qwen2 trained on redundant ('overthinking') reasoning traces of the chained-"
        "arithmetic task; the starting point of LAPO."), seed=cfg.base.seed, training=stats,
        config=to_dict(cfg)["base"])
    return out


def _reasoning_rows(cfg: PipelineConfig, imported: Path, rows_file: Path) -> dict:
    """Main process: the imported model's own correct solutions -> SFT rows (a file)."""
    from lapo.training.reasoning_base import collect_traces, reasoning_tokenizer

    with distributed.engine_env():
        rows, stats = collect_traces(imported, cfg.reasoning_base, cfg.engine,
                                     cfg.run.train_data, reasoning_tokenizer(imported))
    rows_file.parent.mkdir(parents=True, exist_ok=True)
    rows_file.write_text(json.dumps(rows) + "\n")
    return stats


def run_reasoning_base(cfg: PipelineConfig, run: Path) -> Path:
    from lapo.training.reasoning_base import train_reasoning_base

    imported, out = Path(cfg.run.base_checkpoint), run / "base"
    if _done(out):
        return out
    _banner("base", f"reasoning base from {imported}: its own correct traces in <think> "
            "(format SFT, TRL SFTTrainer" + (" + PEFT LoRA)" if cfg.lora.enabled else ")"))
    rows_file = run / "work" / "reasoning_base_rows.json"
    stats = distributed.on_main(_reasoning_rows, cfg, imported, rows_file,
                                what="the reasoning base's sampling")
    stats.update(train_reasoning_base(imported, out, cfg.reasoning_base, cfg.lora,
                                      json.loads(rows_file.read_text()), run / "work",
                                      cfg.run.base_checkpoint))
    distributed.free_memory()
    _manifest(out, imported, kind="lapo-reasoning-base", stage="base", description=(
        f"{imported.name} taught to reason in <think>...</think> on its own correct "
        "step-by-step solutions (format SFT)."), seed=cfg.reasoning_base.seed, training=stats,
        config=to_dict(cfg)["reasoning_base"], **_adapter_fields(cfg, out))
    return out


def run_stage1(cfg: PipelineConfig, run: Path) -> Path:
    from lapo.training.stages import run_stage1 as train

    parent, out = _base(cfg, run), run / "stage1"
    if _done(out):
        return out
    _banner("stage1", "GRPO discovery, reward 1[correct] + alpha*R1 (TRL GRPOTrainer)")
    stats = train(parent, out, cfg.stage1, run / "work", train_data=cfg.run.train_data,
                  lora=cfg.lora)
    distributed.free_memory()
    _manifest(out, parent, kind="lapo-stage1", stage="stage1", seed=cfg.stage1.seed,
              reward={"alpha": cfg.stage1.alpha, "range": "P30-P70", "slope_tokens": 100},
              length_memory=stats["memory"], training=stats, config=to_dict(cfg)["stage1"],
              **_adapter_fields(cfg, out))
    return out


def _warmup_rollouts(cfg: PipelineConfig, parent: Path, rows_file: Path) -> dict:
    """Main process: the stage-1 model's rollouts -> SFT rows (a file) and their stats."""
    from lapo.training.lora import servable
    from lapo.training.warmup import collect_rows

    model = servable(parent, rows_file.parent)
    with distributed.engine_env():
        rows, stats = collect_rows(model, cfg.warmup, cfg.engine, cfg.run.train_data)
    rows_file.parent.mkdir(parents=True, exist_ok=True)
    rows_file.write_text(json.dumps(rows) + "\n")
    return stats


def run_warmup(cfg: PipelineConfig, run: Path) -> Path:
    from lapo.training.lora import carry_base_name
    from lapo.training.rewards import LengthMemory
    from lapo.training.warmup import fill_memory, train_warmup

    parent, out = run / "stage1", run / "warmup"
    if _done(out):
        return out
    _banner("warmup", "budget-format warm-up on hindsight-labelled rollouts (TRL SFTTrainer)")
    rows_file = run / "work" / "warmup_rows.json"
    stats = distributed.on_main(_warmup_rollouts, cfg, parent, rows_file,
                                what="the warm-up's rollouts")
    stats.update(train_warmup(parent, out, cfg.warmup, json.loads(rows_file.read_text()),
                              run / "work", cfg.lora))
    distributed.on_main(carry_base_name, parent, out, what="naming the adapter's base")
    distributed.free_memory()

    def finish() -> None:
        memory = LengthMemory.from_json(json.loads((parent / "length_memory.json").read_text()))
        stats["memory_filled"] = fill_memory(memory, stats.pop("correct_lengths"))
        (out / "length_memory.json").write_text(json.dumps(memory.to_json(), indent=1) + "\n")
        write_manifest(out, kind="lapo-warmup", stage="warmup", **_lineage(parent),
                       world_size=distributed.world_size(), seed=cfg.warmup.seed,
                       training=stats, length_memory=memory.stats(),
                       config=to_dict(cfg)["warmup"], **_adapter_fields(cfg, out))

    distributed.on_main(finish, what="the warm-up's M(q) and manifest")
    return out


def run_stage2(cfg: PipelineConfig, run: Path) -> Path:
    from lapo.training.rewards import LengthMemory
    from lapo.training.stages import run_stage2 as train

    parent, out = run / "warmup", run / "stage2"
    if _done(out):
        return out
    _banner("stage2", "GRPO internalization with n = M(q) (TRL GRPOTrainer)")
    memory = LengthMemory.from_json(json.loads((parent / "length_memory.json").read_text()))
    s = cfg.stage2
    stats = train(parent, out, s, run / "work", memory, train_data=cfg.run.train_data,
                  lora=cfg.lora)
    distributed.free_memory()
    _manifest(out, parent, kind="lapo", stage="stage2", seed=s.seed,
              reward={"beta": s.beta, "sigma": f"{s.sigma_frac} * n (min 4 tokens)",
                      "inject_share": s.inject_share, "eq8": "min(M(q), median)"},
              length_memory=stats["memory"], training=stats, config=to_dict(cfg)["stage2"],
              **_adapter_fields(cfg, out))
    return out


def run_evaluation(cfg: PipelineConfig, run: Path) -> dict:
    """Base, stage 1 and stage 2 on the same held-out problems, same settings (on the main
    process; every rank returns the comparison)."""
    return distributed.on_main(_evaluate, cfg, run, what="the evaluation")


def _check_eval_fits(cfg: PipelineConfig, folder: Path, items) -> None:
    """The longest evaluation prompt plus [eval] max_tokens must fit the engine's context."""
    from transformers import AutoTokenizer

    from lapo.evaluation.backends import build_prompt
    from lapo.think import TokenCounter

    counter = TokenCounter(AutoTokenizer.from_pretrained(folder))
    longest = max(len(counter.encode(build_prompt(counter.tokenizer, item, None,
                                                  counter.profile))) for item in items)
    cfg.engine.check_fits(longest, cfg.eval.max_tokens, "[eval]")


def _evaluate(cfg: PipelineConfig, run: Path) -> dict:
    from lapo.evaluation.evaluate import EvalSettings, eval_items, evaluate_models
    from lapo.evaluation.report import write
    from lapo.training import results

    e = cfg.eval
    settings = EvalSettings(data=e.data, per_level=e.per_level, k=e.k,
                            temperature=e.temperature, top_p=e.top_p, max_tokens=e.max_tokens,
                            seed=cfg.run.seed)
    items = eval_items(settings)
    folders = {"base": _base(cfg, run), "stage1": run / "stage1", "stage2": run / "stage2"}
    _check_eval_fits(cfg, folders["base"], items)
    _banner("eval", ", ".join(folders))
    # LoRA stages of one base share one engine (each served as an adapter, as `lapo serve`
    # serves them); full checkpoints get an engine each.
    with distributed.engine_env():
        reports = asyncio.run(evaluate_models(folders, settings, items=items,
                                              engine_for=cfg.engine.for_model))
    for name, rep in reports.items():
        write(rep, run / "eval" / f"{name}.json", title=f"{name} (held-out)")
    comparison = results.compare(reports)
    (run / "eval" / "results.md").write_text(results.markdown(comparison, reports))
    (run / "eval" / "comparison.json").write_text(json.dumps(comparison, indent=2) + "\n")
    results.plot(reports, run / "eval" / "length_vs_difficulty.png")
    profile = results.baseline_profile(reports["base"], reports["stage2"])
    for name, folder in folders.items():
        if not (folder / MANIFEST).is_file():
            continue  # an external base checkpoint: its folder is not ours to write
        manifest = read_manifest(folder)
        manifest["evaluation"] = results.eval_summary(reports[name])
        if name == "stage2":
            manifest["comparison"] = comparison
            manifest["baseline_profile"] = profile
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return comparison


def publish(src: Path, dest: Path) -> None:
    """Copy a checkpoint (weights, tokenizer, manifest, memory) into ``dest``: into a sibling
    folder first, then renamed over the old copy, so a reader never sees half a checkpoint."""
    dest = dest if dest.is_absolute() else REPO_ROOT / dest
    staging = dest.with_name(f".{dest.name}.publishing")
    if staging.exists():
        shutil.rmtree(staging)
    shutil.copytree(src, staging)
    if dest.exists():
        shutil.rmtree(dest)
    staging.rename(dest)
    logger.info("published %s -> %s (hash %s)", src, dest, checkpoint_hash(dest))


def run_pipeline(config: Path, out: Path | None = None, only: str | None = None) -> Path:
    """Run the stages; returns the final checkpoint (the published copy when publishing)."""
    cfg = load_config(config)
    rank, world = distributed.init(cpu=uses_cpu(cfg), timeout_s=cfg.run.collective_timeout_s)
    logger.info("lapo train: rank %d of world size %d", rank, world)
    run = Path(out or cfg.run.out)
    steps = {"base": run_base, "stage1": run_stage1, "warmup": run_warmup,
             "stage2": run_stage2, "eval": run_evaluation}
    if only is not None and only not in steps:
        raise ConfigError(f"--only must be one of {', '.join(STAGES)}, got {only!r}")

    def start() -> None:
        run.mkdir(parents=True, exist_ok=True)
        (run / "config.json").write_text(json.dumps(to_dict(cfg), indent=2) + "\n")

    # The checks the dry run makes before it plans, on this launch's ranks: every problem
    # they find stops the run here, before any stage (PreflightError).
    for warning in check_run(cfg, run, world, only, done=_done):
        logger.warning("%s", warning)
    for name in GRPO_STAGES:
        if only in (None, name) and not _done(run / name):
            layout = batch_layout(getattr(cfg, name), world)
            logger.info("%s batch: %d completions per device per micro-step x %d accumulation "
                        "x %d ranks; %d completions per generation", name,
                        layout.per_device_train_batch_size, layout.gradient_accumulation_steps,
                        world, layout.generation_batch_size)
    distributed.on_main(start, what="creating the run folder")
    for name in STAGES:
        if only is None or only == name:
            steps[name](cfg, run)
    final = run / "stage2"
    if only in (None, "eval"):
        if cfg.run.publish_base:
            distributed.on_main(publish, run / "base", Path(cfg.run.publish_base),
                                what="publishing the base")
        if cfg.run.publish:
            distributed.on_main(publish, run / "stage2", Path(cfg.run.publish),
                                what="publishing")
            final = _published(Path(cfg.run.publish))
    return final


def _published(dest: Path) -> Path:
    return dest if dest.is_absolute() else REPO_ROOT / dest
