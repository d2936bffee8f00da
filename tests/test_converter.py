"""weights_tools convert/verify: formats accepted, failure cases, and nothing lost on failure."""

from __future__ import annotations

import hashlib
import os
import shutil
import types

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import minigen
from weights_tools.convert import convert, verify
from weights_tools.hf_checkpoint import CheckpointError

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


def run_weights_tools(capsys, *args):
    """`python -m weights_tools ARGS` in this process: (exit code, stderr)."""
    from weights_tools.__main__ import main

    capsys.readouterr()
    code = main([str(a) for a in args])
    return types.SimpleNamespace(returncode=code, stderr=capsys.readouterr().err)


def test_cli_convert_with_verify_reports_difference(hf_dir, tmp_path, capsys):
    out = run_weights_tools(capsys, "convert", hf_dir, tmp_path / "m", "--verify")
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


def test_existing_destination_needs_force(hf_dir, tmp_path, capsys):
    dst = tmp_path / "m"
    convert(str(hf_dir), str(dst), quiet=True)
    with pytest.raises(CheckpointError, match="--force"):
        convert(str(hf_dir), str(dst), quiet=True)
    out = run_weights_tools(capsys, "convert", hf_dir, dst)
    assert out.returncode == 1 and "--force" in out.stderr and "Traceback" not in out.stderr
    (dst / "config.json").write_text((dst / "config.json").read_text().replace('"n_head"', '"n_head" '))
    convert(str(hf_dir), str(dst), force=True, quiet=True)  # a minigen model directory is replaced
    assert '"n_head" ' not in (dst / "config.json").read_text()


def test_force_never_deletes_a_directory_that_is_not_a_minigen_model(hf_dir, tmp_path):
    user = tmp_path / "user"
    user.mkdir()
    (user / "keep.txt").write_text("precious")
    with pytest.raises(CheckpointError, match="replaces only a minigen model directory.*not one"):
        convert(str(hf_dir), str(user), force=True, quiet=True)
    assert (user / "keep.txt").read_text() == "precious"
    (tmp_path / "a-file").write_text("precious")
    with pytest.raises(CheckpointError, match="not a directory"):
        convert(str(hf_dir), str(tmp_path / "a-file"), force=True, quiet=True)
    assert (tmp_path / "a-file").read_text() == "precious"
    # a HF checkpoint is not a minigen model either
    other = tmp_path / "other-hf"
    shutil.copytree(hf_dir, other)
    with pytest.raises(CheckpointError, match="not in minigen's format"):
        convert(str(hf_dir), str(other), force=True, quiet=True)
    assert tree_digest(other) == tree_digest(hf_dir)


def test_force_never_deletes_files_added_beside_a_model(hf_dir, tmp_path):
    dst = tmp_path / "m"
    convert(str(hf_dir), str(dst), quiet=True)
    (dst / "notes.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="would delete notes.txt"):
        convert(str(hf_dir), str(dst), force=True, quiet=True)
    assert (dst / "notes.txt").read_text() == "mine"


def test_destination_containing_the_source_is_refused(hf_and_minigen, tmp_path):
    _, src, _ = hf_and_minigen("tiny")
    project = tmp_path / "proj"
    shutil.copytree(src, project / "src")
    before = tree_digest(project / "src")
    for dst in (project, project / "src"):
        with pytest.raises(CheckpointError, match="is or contains the source"):
            convert(str(project / "src"), str(dst), force=True, quiet=True)
    assert tree_digest(project / "src") == before
    from weights_tools.__main__ import main

    assert main(["convert", str(project / "src"), str(project), "--force"]) == 1
    assert tree_digest(project / "src") == before


def test_failed_verification_leaves_the_old_model_in_place(hf_dir, tmp_path):
    dst = tmp_path / "m"
    convert(str(hf_dir), str(dst), quiet=True)
    before = tree_digest(dst)
    rewrite_tensors(hf_dir, lambda t: t["transformer.ln_f.bias"].__iadd__(1.0))  # a different model
    with pytest.raises(CheckpointError, match="verification failed"):
        convert(str(hf_dir), str(dst), force=True, quiet=True, verify_with_source=True, tolerance=-1.0)
    assert tree_digest(dst) == before
    assert sorted(os.listdir(tmp_path)) == ["hf", "m"]  # no temporary directory left behind


def test_distinct_lm_head_is_kept_as_the_reference_keeps_it(hf_dir, tmp_path):
    import torch
    import transformers

    rng = np.random.default_rng(1)
    rewrite_tensors(hf_dir, lambda t: t.update(
        {"lm_head.weight": rng.standard_normal(t["transformer.wte.weight"].shape).astype(np.float32)}))
    convert(str(hf_dir), str(tmp_path / "m"), quiet=True, verify_with_source=True)
    model = minigen.load(tmp_path / "m")
    assert not model.config.tie_word_embeddings
    ids = np.array([[3, 1, 4, 1, 5, 9, 2, 6]])
    hf = transformers.GPT2LMHeadModel.from_pretrained(hf_dir).eval()
    with torch.no_grad():
        ref = hf(torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(model.logits(ids), ref, atol=1e-4)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: t.update({"transformer.h.0.mlp.c_fc.bias": np.zeros(256, np.int32)}),
         "'h.0.mlp.up.bias' has dtype int32"),
        (lambda t: t.update({"transformer.ln_f.weight": np.ones(64, bool)}), "'ln_f.scale' has dtype bool"),
        (lambda t: t["transformer.h.1.attn.c_attn.weight"].__setitem__((0, 0), np.nan),
         "'h.1.attn.qkv.kernel' holds 1 NaN or infinite"),
        (lambda t: t["transformer.wpe.weight"].__setitem__((2, 2), np.inf), "'wpe' holds 1 NaN or infinite"),
    ],
    ids=["int-weights", "bool-weights", "nan", "inf"],
)
def test_bad_weight_values_are_refused_by_name(hf_dir, tmp_path, change, message):
    rewrite_tensors(hf_dir, change)
    with pytest.raises(CheckpointError, match=message):
        convert(str(hf_dir), str(tmp_path / "m"), quiet=True)
    assert not (tmp_path / "m").exists()


def test_float16_overflow_is_refused(hf_dir, tmp_path):
    rewrite_tensors(hf_dir, lambda t: t["transformer.wte.weight"].__setitem__((0, 0), 1e6))
    with pytest.raises(CheckpointError, match="'wte' has values too large for float16"):
        convert(str(hf_dir), str(tmp_path / "m"), dtype="float16", quiet=True)
    assert not (tmp_path / "m").exists()
    convert(str(hf_dir), str(tmp_path / "m"), dtype="bfloat16", quiet=True)  # fits bfloat16's range


def test_read_only_destination_is_one_line(hf_dir, tmp_path, capsys, monkeypatch):
    import tempfile

    from weights_tools.__main__ import main

    def denied(*args, **kwargs):  # what a read-only directory answers (root ignores chmod, so simulate it)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkdtemp", denied)
    assert main(["convert", str(hf_dir), str(tmp_path / "m")]) == 1
    assert capsys.readouterr().err == f"error: cannot write into {str(tmp_path)!r}: Permission denied\n"
    assert not (tmp_path / "m").exists()


def test_unwritable_destination_is_one_line(hf_dir, tmp_path, capsys):
    from weights_tools.__main__ import main

    (tmp_path / "a-file").write_text("x")
    assert main(["convert", str(hf_dir), str(tmp_path / "a-file" / "m")]) == 1
    err = capsys.readouterr().err
    assert err == f"error: cannot write into {str(tmp_path / 'a-file')!r}: it is a file, not a directory\n"


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


def _minigen_copy(hf_dir, tmp_path):
    convert(str(hf_dir), str(tmp_path / "m"), quiet=True)
    return tmp_path / "m"


def test_load_refuses_tensors_the_config_does_not_describe(hf_dir, tmp_path):
    import json

    m = _minigen_copy(hf_dir, tmp_path)
    cfg = json.loads((m / "config.json").read_text())
    (m / "config.json").write_text(json.dumps({**cfg, "n_layer": 1}))
    with pytest.raises(minigen.LoadError, match="config.json does not describe: h.1.*n_layer"):
        minigen.load(m)
    (m / "config.json").write_text(json.dumps(cfg))
    tensors = load_file(m / "model.safetensors")
    tensors["lm_head"] = tensors["wte"] * 2
    save_file(tensors, m / "model.safetensors", metadata={"format": "minigen", "minigen_format_version": "1"})
    with pytest.raises(minigen.LoadError, match="lm_head.*tie_word_embeddings: false"):
        minigen.load(m)


def test_load_refuses_nan_weights_and_a_file_path(hf_dir, tmp_path):
    m = _minigen_copy(hf_dir, tmp_path)
    tensors = load_file(m / "model.safetensors")
    tensors["h.0.ln_1.scale"][3] = np.nan
    save_file(tensors, m / "model.safetensors", metadata={"format": "minigen", "minigen_format_version": "1"})
    with pytest.raises(minigen.LoadError, match="'h.0.ln_1.scale' holds 1 NaN"):
        minigen.load(m)
    with pytest.raises(minigen.LoadError, match="is a file; pass the model directory"):
        minigen.load(m / "model.safetensors")
