"""Reduced precision (minigen/precision.py): int8 W8A8 and bfloat16 dots inside the compiled loops.

float32 parity lives in every other test module, unchanged. Here: the int8 arithmetic equals its
integer definition; every strategy runs at each reduced dtype with one compile per shape and keeps
the invariants that hold between minigen's own paths (speculation and the request engine give
what plain greedy gives at that dtype); int8 files convert, verify, load and export; bad files and
dtypes are named; and quality bounds on the shipped model's fixed weights over text it never saw.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np
import pytest
from conftest import PROMPTS, left_padded_batch
from helpers import alone, until_end

import minigen
from minigen.quantize import dequantize_tensors, quantize_rows, quantize_tensors
from minigen.weights import LoadError

REDUCED = ("bfloat16", "int8")


def test_quantize_rows_rounds_to_half_a_step_and_a_zero_row_divides_by_nothing():
    w = np.random.default_rng(0).standard_normal((5, 40)).astype(np.float32)
    w[2] = 0.0
    q, scale = quantize_rows(w, "h.0.mlp.up.kernel")
    assert q.dtype == np.int8 and scale.dtype == np.float32 and scale.shape == (5,)
    assert scale[2] == 1.0 and not q[2].any()
    assert (np.abs(q[[0, 1, 3, 4]]).max(axis=1) == 127).all()  # each row's largest value uses the full range
    err = np.abs(q * scale[:, None] - w)
    assert (err <= scale[:, None] / 2 + 1e-7).all()
    with pytest.raises(ValueError, match="'h.0.mlp.up.kernel' holds NaN"):
        quantize_rows(np.where(np.eye(5, 40) > 0, np.nan, w), "h.0.mlp.up.kernel")


@pytest.mark.parametrize("tokens", [1, 3, 20])
def test_int8_matmul_is_integer_arithmetic_in_either_orientation(tokens):
    import tensorflow as tf

    from minigen import precision

    rng = np.random.default_rng(tokens)
    w = rng.standard_normal((48, 64)).astype(np.float32)
    x = rng.standard_normal((tokens, 64)).astype(np.float32)
    x[0] = 0.0  # a padding row: scale 1, zeros out
    m = precision.matrix(w, "int8", "w")
    q, w_scale = quantize_rows(w)
    xq, x_scale = quantize_rows(x)  # the same symmetric per-row rule the step applies to activations
    expected = (xq.astype(np.int64) @ q.T.astype(np.int64)).astype(np.float32) * x_scale[:, None] * w_scale
    for weight_left in (False, True):
        got = tf.function(lambda x, wl=weight_left: precision.matmul(x, m, wl), jit_compile=True)(x).numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6, err_msg=f"weight_left={weight_left}")
    assert not got[0].any()


@pytest.mark.parametrize("weight_left", [False, True])
def test_int8_dot_as_bfloat16_is_integer_arithmetic_past_float32s_exact_range(monkeypatch, weight_left):
    """The bfloat16 route of the int8 dot (precision.INT8_AS_BFLOAT16_FROM, taken on CPUs with
    AVX512-BF16 and no AMX) gives the s8 x s8 -> s32 result exactly, also where one float32 sum could
    not: row 0 meets row 0 in a sum of 33,870,773, odd and above 2**24."""
    import tensorflow as tf

    from minigen import precision

    rng = np.random.default_rng(0)
    xq = rng.integers(-127, 128, (300, 2100)).astype(np.int8)
    w = rng.integers(-127, 128, (40, 2100)).astype(np.int8)
    xq[0], w[0] = 127, 127
    w[0, 7] = 126
    expected = xq.astype(np.int64) @ w.T.astype(np.int64)
    assert expected[0, 0] == 33_870_773
    monkeypatch.setattr(precision, "INT8_AS_BFLOAT16_FROM", 256)
    got = tf.function(lambda x: precision._int8_dot(x, tf.constant(w), weight_left), jit_compile=True)(xq).numpy()
    np.testing.assert_array_equal(got, expected)


@pytest.fixture(scope="module")
def tiny_dir(hf_and_minigen):
    _, hf_dir, _ = hf_and_minigen("tiny")
    return hf_dir.parent / "minigen"


@pytest.mark.slow
@pytest.mark.parametrize("dtype", REDUCED)
def test_each_strategy_runs_at_the_dtype_with_one_compile_per_shape(hf_and_minigen, tiny_dir, dtype):
    _, _, f32 = hf_and_minigen("tiny")
    model = minigen.load(tiny_dir, dtype=dtype)
    assert model.network.dtype == dtype
    rng = np.random.default_rng(7)
    ids, mask = left_padded_batch(rng, 511, [9, 4, 14])
    ids[:, -6:] = ids[:, -12:-6]  # repetition for prompt lookup
    common = dict(max_new_tokens=12, pad_token_id=1, eos_token_id=None)

    greedy = model.generate(ids, mask, **common)
    traces = model.trace_count
    other = np.where(mask == 1, rng.integers(0, 511, ids.shape), ids)
    model.generate(other, mask, **common)  # new prompts, same shape: no new compile
    assert model.trace_count == traces

    # the reduced dtype is what computes: its logits differ from float32's, but not by much
    ours, ref = model.logits(ids, mask), f32.logits(ids, mask)
    real = mask.astype(bool)
    assert np.abs(ours - ref)[real].max() > 0
    # (random weights at init 0.3 give outlier activations: int8 agreed on 23 of 27 positions; the
    # quality bounds are the shipped model's, below)
    assert (ours.argmax(-1) == ref.argmax(-1))[real].mean() >= 0.7

    # minigen's own invariants hold at this dtype: speculation and the engine give plain greedy's tokens
    lookup = model.generate(ids, mask, prompt_lookup_num_tokens=3, **common)
    np.testing.assert_array_equal(lookup, greedy)
    requests = [{"input_ids": ids[r][mask[r] == 1].tolist(), "max_new_tokens": n, "eos_token_id": [511]}
                for r, n in enumerate((12, 5, 9))]
    for request, result in zip(requests, model.generate_many(requests, slots=2, progress=False)):
        assert result.new_tokens == until_end(alone(model, request)[0], [511])

    streamed = np.concatenate(list(model.stream_tokens(ids, mask, chunk_size=5, **common)), axis=1)
    np.testing.assert_array_equal(streamed, greedy[:, ids.shape[1]:])

    sampled = [model.generate(ids, mask, do_sample=True, top_k=40, seed=(5, 6), **common) for _ in range(2)]
    np.testing.assert_array_equal(sampled[0], sampled[1])
    beams = model.generate(ids, mask, num_beams=3, num_return_sequences=2, **common)
    assert beams.shape == (6, ids.shape[1] + 12)
    contrastive = model.generate(ids, mask, penalty_alpha=0.6, top_k=4, **common)
    assert contrastive.shape == greedy.shape and (contrastive[:, ids.shape[1]:] < 512).all()


def test_int8_file_converts_verifies_loads_and_exports(hf_and_minigen, tiny_dir, tmp_path):
    from safetensors import safe_open

    from weights_tools.convert import convert, verify
    from weights_tools.export_hf import export_hf

    hf, hf_dir, _ = hf_and_minigen("tiny")
    dst = tmp_path / "int8"
    convert(str(hf_dir), str(dst), dtype="int8", quiet=True, verify_with_source=True)
    assert os.path.getsize(dst / "model.safetensors") < 0.4 * os.path.getsize(tiny_dir / "model.safetensors")
    with safe_open(str(dst / "model.safetensors"), framework="numpy") as f:
        assert f.metadata()["minigen_dtype"] == "int8"
        assert str(f.get_tensor("h.0.attn.qkv.kernel").dtype) == "int8"
        assert f.get_tensor("h.0.attn.qkv.kernel.quant_scale").shape == (192,)  # one per output channel
        assert str(f.get_tensor("wpe").dtype) == "float32"
    assert verify(str(dst), str(hf_dir), quiet=True) < 1e-3

    from_file, at_load = minigen.load(dst), minigen.load(tiny_dir, dtype="int8")
    assert from_file.network.dtype == "int8"  # an int8 file computes in int8 unless told otherwise
    ids, mask = left_padded_batch(np.random.default_rng(2), 511, [7, 12])
    np.testing.assert_array_equal(from_file.logits(ids, mask), at_load.logits(ids, mask))  # one quantizer

    # export_hf writes the float32 model the int8 file stands for; transformers reads it
    import torch
    import transformers

    export_hf(str(dst), str(tmp_path / "hf"))
    back = transformers.GPT2LMHeadModel.from_pretrained(str(tmp_path / "hf")).eval()
    with torch.no_grad():
        theirs = back(torch.tensor(ids[1:]), attention_mask=torch.tensor(mask[1:])).logits.numpy()
    ours = minigen.load(dst, dtype="float32").logits(ids[1:], mask[1:])
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", REDUCED)
def test_saved_model_at_the_dtype_equals_the_model(tiny_dir, tmp_path, dtype):
    import tensorflow as tf

    from minigen.export import export

    model = minigen.load(tiny_dir, dtype=dtype)
    ids, mask = left_padded_batch(np.random.default_rng(4), 511, [5, 16], pad_id=1)
    export(model, str(tmp_path / "saved"), batch_size=2, bucket=16, max_new_tokens=8, strategies=("greedy",))
    loaded = tf.saved_model.load(str(tmp_path / "saved"))
    got = loaded.signatures["greedy"](input_ids=tf.constant(ids, tf.int32), attention_mask=tf.constant(mask, tf.int32),
                                      repetition_penalty=tf.constant(1.0), min_new_tokens=tf.constant(0))
    expected = model.generate(ids, mask, max_new_tokens=8, pad_token_id=model.config.eos_token_id)
    np.testing.assert_array_equal(got["sequences"].numpy()[:, 16:], expected[:, 16:])


def write_int8(path, change):
    """An int8 model directory at `path` (from the tiny model) with its tensors edited by `change`."""
    import shutil

    from safetensors.numpy import load_file, save_file

    src = path.parent / "int8-src"
    tensors = load_file(str(src / "model.safetensors"))
    change(tensors)
    shutil.copytree(src, path)
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "minigen", "minigen_format_version": "1",
                                                                  "minigen_dtype": "int8"})
    return path


BAD_INT8 = {
    "missing scale": (lambda t: t.pop("h.1.mlp.up.kernel.quant_scale"), "'h.1.mlp.up.kernel' has no scales"),
    "scale shape": (lambda t: t.__setitem__("wte.quant_scale", t["wte.quant_scale"][:5]), "'wte.quant_scale' has shape"),
    "float matrix": (lambda t: t.__setitem__("h.0.attn.out.kernel", t["h.0.attn.out.kernel"].astype(np.float32)),
                     "'h.0.attn.out.kernel' has dtype float32"),
    "zero scale": (lambda t: t["h.0.mlp.down.kernel.quant_scale"].__setitem__(3, 0.0),
                   "'h.0.mlp.down.kernel.quant_scale' holds scales that are not finite and > 0"),
    "orphan scale": (lambda t: t.__setitem__("ln_f.bias.quant_scale", np.ones(64, np.float32)),
                     "'ln_f.bias.quant_scale' is a scale of no int8 matrix"),
}


@pytest.mark.parametrize("case", sorted(BAD_INT8))
def test_bad_int8_files_name_the_tensor(hf_and_minigen, tmp_path, case):
    from weights_tools.convert import convert

    _, hf_dir, _ = hf_and_minigen("tiny")
    convert(str(hf_dir), str(tmp_path / "int8-src"), dtype="int8", quiet=True)
    change, message = BAD_INT8[case]
    with pytest.raises(LoadError, match=message.replace("(", r"\(")):
        minigen.load(write_int8(tmp_path / "bad", change))


def test_int8_convert_refuses_nan_and_writes_nothing(hf_and_minigen, tmp_path):
    import shutil

    from safetensors.numpy import load_file, save_file

    from weights_tools.convert import convert
    from weights_tools.hf_checkpoint import CheckpointError

    _, hf_dir, _ = hf_and_minigen("tiny")
    src = tmp_path / "hf"
    shutil.copytree(hf_dir, src)
    tensors = load_file(str(src / "model.safetensors"))
    tensors["transformer.h.1.mlp.c_fc.weight"][0, 0] = np.nan
    save_file(tensors, str(src / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="h.1.mlp.up.kernel"):
        convert(str(src), str(tmp_path / "out"), dtype="int8", quiet=True)
    assert not (tmp_path / "out").exists() and [p.name for p in tmp_path.iterdir()] == ["hf"]


@pytest.mark.slow
def test_the_command_runs_at_the_dtype_asked(text_model_dir, cli):
    path, _ = text_model_dir
    result = cli("generate", PROMPTS[0], "--model", path, "--max-new-tokens", 8, "--dtype", "int8")
    assert result.returncode == 0, result.stderr
    assert result.stdout == PROMPTS[0] + minigen.load(path, dtype="int8").generate_text(PROMPTS[0], max_new_tokens=8)[0] + "\n"
    refused = cli("generate", PROMPTS[0], "--model", path, "--dtype", "int4")
    assert refused.returncode == 2 and "int8" in refused.stderr


def test_unknown_dtype_is_refused_with_the_accepted_ones(tiny_dir):
    with pytest.raises(LoadError, match="dtype must be one of float32, bfloat16, float16, int8, got 'int4'"):
        minigen.load(tiny_dir, dtype="int4")


def test_a_cpu_without_the_instructions_is_told_once(monkeypatch, capsys):
    from minigen import cpu

    monkeypatch.setattr(cpu, "_WARNED", set())
    monkeypatch.setattr(cpu, "cpu_flags", lambda: {"avx2", "fma"})
    cpu.warn_slow_dtype("int8")
    cpu.warn_slow_dtype("int8")
    assert capsys.readouterr().err.count("dtype='int8' works but may not be faster") == 1
    monkeypatch.setattr(cpu, "cpu_flags", lambda: {"avx2", "avx512_bf16"})
    cpu.warn_slow_dtype("bfloat16")
    cpu.warn_slow_dtype("float32")
    assert capsys.readouterr().err == ""


def test_quantize_tensors_round_trips_the_file_layout():
    rng = np.random.default_rng(1)
    tensors = {"wte": rng.standard_normal((10, 4)), "h.0.mlp.up.kernel": rng.standard_normal((4, 16)),
               "h.0.mlp.up.bias": rng.standard_normal(16)}
    stored = quantize_tensors({k: v.astype(np.float32) for k, v in tensors.items()})
    assert stored["wte.quant_scale"].shape == (10,) and stored["h.0.mlp.up.kernel.quant_scale"].shape == (16,)
    back = dequantize_tensors(stored)
    assert set(back) == set(tensors)
    for name, value in tensors.items():
        np.testing.assert_allclose(back[name], value, atol=np.abs(value).max() / 127, err_msg=name)


# ---- quality on fixed weights -----------------------------------------------------------------

HELD_OUT = (pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "corpora" / "gutenberg-classics"
            / "98-a-tale-of-two-cities.txt")
# The shipped gutenberg-6l over 8 x 256 tokens of its validation book (never trained on), as
# benchmarks/quality_precision.py reads it. Measured (AMD EPYC, TF 2.21): float32 perplexity 140.41;
# bfloat16 +0.013 %, top-1 agreement 99.76 %; int8 -0.065 %, 98.49 %. The perplexity bounds are
# issue 32's targets (0.5 %, 2 %); the agreement bounds leave a margin under what was measured.
QUALITY = {"bfloat16": dict(ppl_ratio=0.005, top1=0.99), "int8": dict(ppl_ratio=0.02, top1=0.97)}


@pytest.mark.skipif(not HELD_OUT.is_file(), reason=f"held-out text {HELD_OUT} is absent (../shared/data)")
@pytest.mark.parametrize("dtype", ["int8", pytest.param("bfloat16", marks=pytest.mark.slow)])  # int8 by default
def test_quality_of_reduced_dtypes_on_the_shipped_model(dtype):
    base = minigen.load()
    text = HELD_OUT.read_text(encoding="utf-8")
    ids = np.array(base.tokenizer.encode(text[len(text) // 3:])[: 8 * 256]).reshape(8, 256)
    lm = minigen.load(dtype=dtype)
    ppl = {}
    for name, model in (("float32", base), (dtype, lm)):
        logits = model.logits(ids)  # [8, 256, vocab]
        logp = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
        nll = -np.take_along_axis(logp[:, :-1], ids[:, 1:, None], -1).mean()
        ppl[name] = (float(np.exp(nll)), logits.argmax(-1))
    ratio = ppl[dtype][0] / ppl["float32"][0] - 1
    agree = (ppl[dtype][1] == ppl["float32"][1]).mean()
    bound = QUALITY[dtype]
    print(f"{dtype}: perplexity {ppl[dtype][0]:.4f} vs {ppl['float32'][0]:.4f} ({100 * ratio:+.3f} %), "
          f"top-1 agreement {100 * agree:.2f} %")
    assert abs(ratio) <= bound["ppl_ratio"], (ratio, ppl["float32"][0])
    assert agree >= bound["top1"], agree
