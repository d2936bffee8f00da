import json

import pytest

from minigen import ConfigError, GPT2Config


def test_reads_hf_config_and_old_n_ctx(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "gpt2", "vocab_size": 100, "n_ctx": 64, "n_embd": 32,
                                "n_layer": 2, "n_head": 4, "eos_token_id": 99, "unknown_field": 1}))
    cfg = GPT2Config.from_json_file(path)
    assert (cfg.n_positions, cfg.head_dim, cfg.inner_dim, cfg.eos_token_ids) == (64, 8, 128, (99,))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"n_embd": 30}, "divisible by n_head"),
        ({"activation_function": "mish"}, "not implemented"),
        ({"model_type": "llama"}, "model_type"),
        ({"eos_token_id": -1}, "eos_token_id"),
        ({"n_layer": 0}, "n_layer"),
        ({"add_cross_attention": True}, "cross_attention"),
        ({"eos_token_id": 3.0}, "'eos_token_id' must be a non-negative token id or a list"),
        ({"eos_token_id": [3, "x"]}, "'eos_token_id' must be"),
        ({"layer_norm_epsilon": float("inf")}, "layer_norm_epsilon must be a finite positive number"),
        ({"layer_norm_epsilon": float("nan")}, "layer_norm_epsilon must be a finite positive number"),
        ({"pad_token_id": 100}, r"'pad_token_id' is 100, outside the vocabulary \[0, 100\)"),
        ({"tie_word_embeddings": "yes"}, "'tie_word_embeddings' must be true or false"),
    ],
)
def test_inconsistent_configs_are_rejected(change, message):
    raw = {"vocab_size": 100, "n_positions": 64, "n_embd": 32, "n_layer": 2, "n_head": 4}
    raw.update(change)
    with pytest.raises(ConfigError, match=message):
        GPT2Config.from_dict(raw)


def test_missing_fields_are_named():
    with pytest.raises(ConfigError, match="n_head"):
        GPT2Config.from_dict({"vocab_size": 100, "n_positions": 64, "n_embd": 32, "n_layer": 2})


def test_bad_json(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        GPT2Config.from_json_file(tmp_path / "config.json")
