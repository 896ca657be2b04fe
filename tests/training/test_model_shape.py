"""A model's shape and parameter count from its config.json (DeepSeek-R1-Distill-Qwen-1.5B's)."""

from __future__ import annotations

from lapo.training.model_shape import shape_from_config

# DeepSeek-R1-Distill-Qwen-1.5B's config.json (the fields a shape needs).
R1_CONFIG = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 1536,
    "intermediate_size": 8960, "num_hidden_layers": 28, "num_attention_heads": 12,
    "num_key_value_heads": 2, "vocab_size": 151936, "max_position_embeddings": 131072,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "rms_norm_eps": 1e-6,
    "rope_theta": 10000, "hidden_act": "silu", "bos_token_id": 151643, "eos_token_id": 151643,
}
R1_PARAMS = 1_777_088_000  # the published count of DeepSeek-R1-Distill-Qwen-1.5B


def test_parameter_count_from_config_json() -> None:
    shape = shape_from_config(R1_CONFIG)
    assert shape.params == R1_PARAMS
    assert shape.kv_bytes_per_token == 2 * 28 * 2 * 128 * 2
    tied = shape_from_config({**R1_CONFIG, "tie_word_embeddings": True})
    assert R1_PARAMS - tied.params == 151936 * 1536
