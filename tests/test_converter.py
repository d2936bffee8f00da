"""weights_tools convert/verify: formats accepted, failure cases, and nothing lost on failure."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import minigen
from weights_tools.convert import convert, verify
from weights_tools.hf_checkpoint import CheckpointError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tree_digest(path) -> dict:
    return {
        name: hashlib.sha256(open(os.path.join(path, name), "rb").read()).hexdigest() for name in sorted(os.listdir(path))
    }


@pytest.fixture
def hf_dir(hf_and_minigen, tmp_path):
    """A private copy of the tiny HF checkpoint that a test may damage."""
    _, src, _ = hf_and_minigen("tiny")
    dst = tmp_path / "hf"
    shutil.copytree(src, dst)
    return dst


def rewrite_tensors(hf_dir, change):
    path = hf_dir / "model.safetensors"
    tensors = load_file(path)
    change(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def test_cli_convert_with_verify_reports_difference(hf_dir, tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "weights_tools", "convert", str(hf_dir), str(tmp_path / "m"), "--verify"],
        capture_output=True, text=True, cwd=REPO,
    )
    assert out.returncode == 0, out.stderr
    assert "max abs logit difference" in out.stderr
    diff = float(out.stderr.split("max abs logit difference ")[1].split()[0])
    assert diff < 1e-4


def test_sharded_checkpoint(hf_and_minigen, tmp_path):
    hf, _, model = hf_and_minigen("tiny")
    hf.save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    assert not (tmp_path / "sharded" / "model.safetensors").exists()
    convert(str(tmp_path / "sharded"), str(tmp_path / "m"), quiet=True)
    ids = [[1, 2, 3, 4]]
    np.testing.assert_array_equal(minigen.load(tmp_path / "m").logits(ids), model.logits(ids))


def test_unprefixed_names_and_mask_buffers_are_accepted(hf_dir, hf_and_minigen, tmp_path):
    _, _, model = hf_and_minigen("tiny")

    def old_style(t):
        for name in list(t):
            t[name.removeprefix("transformer.")] = t.pop(name)
        t["h.0.attn.bias"] = np.tril(np.ones((1, 1, 128, 128), np.float32))
        t["h.0.attn.masked_bias"] = np.array(-1e4, np.float32)

    rewrite_tensors(hf_dir, old_style)
    convert(str(hf_dir), str(tmp_path / "m"), quiet=True)
    verify(str(tmp_path / "m"), str(hf_dir), quiet=True)
    ids = [[5, 6, 7]]
    np.testing.assert_array_equal(minigen.load(tmp_path / "m").logits(ids), model.logits(ids))


def test_float16_storage_verifies(hf_dir, tmp_path):
    convert(str(hf_dir), str(tmp_path / "m"), dtype="float16", quiet=True)
    assert load_file(tmp_path / "m" / "model.safetensors")["wte"].dtype == np.float16
    assert verify(str(tmp_path / "m"), str(hf_dir), quiet=True) < 1e-3


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: t.pop("transformer.h.1.mlp.c_fc.weight"), "missing tensor.*h.1.mlp.up.kernel"),
        (lambda t: t.update({"transformer.h.0.attn.c_attn.weight": np.zeros((64, 100), np.float32)}),
         "h.0.attn.qkv.kernel.*shape"),
        (lambda t: t.update({"transformer.h.9.attn.c_attn.weight": np.zeros((64, 192), np.float32)}),
         "does not"),
    ],
    ids=["missing-tensor", "wrong-shape", "unknown-tensor"],
)
def test_bad_checkpoint_fails_and_leaves_nothing(hf_dir, tmp_path, change, message):
    rewrite_tensors(hf_dir, change)
    before = tree_digest(hf_dir)
    (tmp_path / "out").mkdir()
    with pytest.raises(CheckpointError, match=message):
        convert(str(hf_dir), str(tmp_path / "out" / "m"), quiet=True)
    assert not (tmp_path / "out" / "m").exists()
    assert not [p for p in os.listdir(tmp_path / "out") if p.startswith(".")]  # no temp dirs left
    assert tree_digest(hf_dir) == before  # SRC untouched


def test_truncated_safetensors(hf_dir, tmp_path):
    path = hf_dir / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        convert(str(hf_dir), str(tmp_path / "m"), quiet=True)
    assert not (tmp_path / "m").exists()


def test_existing_destination_needs_force(hf_dir, tmp_path):
    dst = tmp_path / "m"
    dst.mkdir()
    (dst / "keep.txt").write_text("precious")
    with pytest.raises(CheckpointError, match="--force"):
        convert(str(hf_dir), str(dst), quiet=True)
    assert (dst / "keep.txt").read_text() == "precious"
    out = subprocess.run([sys.executable, "-m", "weights_tools", "convert", str(hf_dir), str(dst)],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 1 and "--force" in out.stderr and "Traceback" not in out.stderr
    convert(str(hf_dir), str(dst), force=True, quiet=True)
    assert not (dst / "keep.txt").exists() and (dst / "model.safetensors").exists()


def test_failed_forced_convert_keeps_old_destination(hf_dir, tmp_path):
    dst = tmp_path / "m"
    convert(str(hf_dir), str(dst), quiet=True)
    before = tree_digest(dst)
    rewrite_tensors(hf_dir, lambda t: t.pop("transformer.wpe.weight"))
    with pytest.raises(CheckpointError):
        convert(str(hf_dir), str(dst), force=True, quiet=True)
    assert tree_digest(dst) == before


def test_load_errors_are_one_clear_sentence(hf_dir, tmp_path):
    with pytest.raises(minigen.LoadError, match="does not exist"):
        minigen.load(tmp_path / "nowhere")
    with pytest.raises(minigen.LoadError, match="not in minigen's format.*weights_tools convert"):
        minigen.load(hf_dir)
    (tmp_path / "empty").mkdir()
    with pytest.raises(minigen.LoadError, match="not a minigen model directory"):
        minigen.load(tmp_path / "empty")
    convert(str(hf_dir), str(tmp_path / "m"), quiet=True)
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(minigen.LoadError, match="corrupt or truncated"):
        minigen.load(tmp_path / "m")


def test_load_rejects_config_weight_mismatch(hf_dir, tmp_path):
    import json

    convert(str(hf_dir), str(tmp_path / "m"), quiet=True)
    cfg_path = tmp_path / "m" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["n_layer"] = 3
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(minigen.LoadError, match="missing tensor"):
        minigen.load(tmp_path / "m")
