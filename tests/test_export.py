"""SavedModel export: loads with TensorFlow alone (fresh process) and gives generate's tokens."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import left_padded_batch

LOADER = """
import json, sys
import numpy as np
import tensorflow as tf
assert "minigen" not in sys.modules
loaded = tf.saved_model.load(sys.argv[1])
inputs = json.load(open(sys.argv[2]))
out = {}
for name, knobs in inputs["calls"].items():
    fn = loaded.signatures[name]
    spec = fn.structured_input_signature[1]
    result = fn(input_ids=tf.constant(inputs["ids"], tf.int32), attention_mask=tf.constant(inputs["mask"], tf.int32),
                **{k: tf.constant(v, spec[k].dtype) for k, v in knobs.items()})
    out[name] = {k: v.numpy().tolist() for k, v in result.items()}
print(json.dumps(out))
"""


@pytest.mark.slow
def test_saved_model_round_trip(hf_and_minigen, tmp_path):
    from minigen.export import export

    _, _, model = hf_and_minigen("tiny")
    ids, mask = left_padded_batch(np.random.default_rng(3), 511, [5, 16], pad_id=1)
    export(model, str(tmp_path / "saved"), batch_size=2, bucket=16, max_new_tokens=8,
           strategies=("greedy", "sample", "beam"), num_beams=3)
    plain = dict(repetition_penalty=1.0, min_new_tokens=0)  # greedy and beam take no sampling inputs
    sample = dict(temperature=0.8, top_k=20, top_p=0.9, repetition_penalty=1.2, min_new_tokens=3, seed=[3, 4],
                  min_p=0.02, typical_p=0.95, epsilon_cutoff=0.0, eta_cutoff=0.0005)
    calls = {"greedy": plain, "sample": sample, "beam": {**plain, "length_penalty": 0.6, "min_new_tokens": 2}}
    (tmp_path / "inputs.json").write_text(json.dumps({"ids": ids.tolist(), "mask": mask.tolist(), "calls": calls}))
    (tmp_path / "load.py").write_text(LOADER)
    done = subprocess.run([sys.executable, str(tmp_path / "load.py"), str(tmp_path / "saved"), str(tmp_path / "inputs.json")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    pad = model.config.eos_token_id
    expected = {
        "greedy": model.generate(ids, mask, max_new_tokens=8, pad_token_id=pad, output_logprobs=True),
        "sample": model.generate(ids, mask, max_new_tokens=8, pad_token_id=pad, do_sample=True, temperature=0.8,
                                 top_k=20, top_p=0.9, repetition_penalty=1.2, min_new_tokens=3, seed=(3, 4),
                                 min_p=0.02, typical_p=0.95, eta_cutoff=0.0005, output_logprobs=True),
        "beam": model.generate(ids, mask, max_new_tokens=8, pad_token_id=pad, num_beams=3, length_penalty=0.6,
                               min_new_tokens=2, output_scores=True),
    }
    for name in calls:  # generated tokens, and the prompt where it is real (the SavedModel reads pad slots as 0)
        sequences = np.array(got[name]["sequences"])
        np.testing.assert_array_equal(sequences[:, 16:], expected[name].sequences[:, 16:], err_msg=name)
        np.testing.assert_array_equal(sequences[:, :16][mask == 1], ids[mask == 1], err_msg=name)
    np.testing.assert_allclose(got["greedy"]["logprobs"], expected["greedy"].logprobs, atol=1e-5)
    np.testing.assert_allclose(got["sample"]["logprobs"], expected["sample"].logprobs, atol=1e-5)
    np.testing.assert_allclose(got["beam"]["sequences_scores"], expected["beam"].sequences_scores, atol=1e-5)

    # what `saved_model_cli show --dir saved --all` reads and lists, read here without a new process
    from tensorflow.python.tools import saved_model_utils

    signatures = saved_model_utils.get_meta_graph_def(str(tmp_path / "saved"), "serve").signature_def
    assert {"greedy", "sample", "beam", "serving_default"} <= set(signatures)
    assert "input_ids" in signatures["greedy"].inputs and "sequences" in signatures["greedy"].outputs


def test_export_rejects_bad_options(hf_and_minigen, tmp_path):
    from minigen.export import export

    _, _, model = hf_and_minigen("tiny")
    with pytest.raises(ValueError, match="strategies"):
        export(model, str(tmp_path / "a"), strategies=("nucleus",))
    with pytest.raises(ValueError, match="fixed --batch-size"):
        export(model, str(tmp_path / "b"), batch_size=None, strategies=("beam",))
    with pytest.raises(ValueError, match="n_positions"):
        export(model, str(tmp_path / "c"), bucket=100, max_new_tokens=100)


def test_cli_export(hf_and_minigen, tmp_path, cli):
    _, hf_dir, _ = hf_and_minigen("tiny")
    model_dir = hf_dir.parent / "minigen"
    ok = cli("export", model_dir, tmp_path / "out", "--batch-size", "none", "--bucket", "16",
             "--max-new-tokens", "4", "--strategy", "greedy,sample")
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert (tmp_path / "out" / "saved_model.pb").is_file()
    bad = cli("export", model_dir, tmp_path / "bad", "--strategy", "nucleus")
    assert bad.returncode == 2 and "strategies must be" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "bad").exists() and not (tmp_path / "bad.partial").exists()


@pytest.mark.slow
def test_saved_model_refuses_bad_requests_by_name(hf_and_minigen, tmp_path):
    import tensorflow as tf

    from minigen.export import export

    _, _, model = hf_and_minigen("tiny")
    (tmp_path / "saved.partial").mkdir()  # a killed run's leftover must not end up in the export
    (tmp_path / "saved.partial" / "stray.txt").write_text("stray")
    export(model, str(tmp_path / "saved"), batch_size=2, bucket=8, max_new_tokens=2, strategies=("sample",))
    assert not (tmp_path / "saved" / "stray.txt").exists()
    assert sorted(os.listdir(tmp_path)) == ["saved", "saved.partial"]
    fn = tf.saved_model.load(str(tmp_path / "saved")).signatures["sample"]
    ids, mask = np.ones([2, 8], np.int32), np.ones([2, 8], np.int32)
    knobs = dict(temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.0, min_new_tokens=0, seed=[1, 2],
                 min_p=0.0, typical_p=1.0, epsilon_cutoff=0.0, eta_cutoff=0.0)
    spec = fn.structured_input_signature[1]

    def call(ids=ids, mask=mask, **change):
        k = {**knobs, **change}
        return fn(input_ids=tf.constant(ids, tf.int32), attention_mask=tf.constant(mask, tf.int32),
                  **{name: tf.constant(value, spec[name].dtype) for name, value in k.items()})

    pads = np.where(np.arange(8) < 3, 0, 1)[None].repeat(2, 0)
    ok = call(ids=np.where(pads == 1, ids, -7), mask=pads)["sequences"].numpy()  # pad slots may hold any id
    assert ok.shape == (2, 10) and (ok[:, 8:] >= 0).all()
    bad = [
        (dict(ids=np.full([2, 8], 600)), r"outside the vocabulary \[0, 512\)"),
        (dict(mask=np.array([[1] * 8, [0] * 8])), "needs at least one 1"),
        (dict(mask=np.array([[1] * 8, [1] * 6 + [0] * 2])), "left-padded"),
        (dict(mask=np.full([2, 8], 2)), "only 0 .padding. and 1"),
        (dict(ids=np.ones([3, 8]), mask=np.ones([3, 8])), r"input_ids must be int32 \[2, 8\]"),
        (dict(ids=np.ones([2, 9]), mask=np.ones([2, 9])), r"input_ids must be int32 \[2, 8\]"),
        (dict(temperature=0.0), "temperature must be a finite number > 0"),
        (dict(top_p=1.5), r"top_p must be in \(0, 1\]"),
        (dict(top_k=-1), "top_k must be >= 0"),
        (dict(repetition_penalty=float("nan")), "repetition_penalty must be"),
        (dict(seed=[1, 2, 3]), r"seed must be int32 \[2\]"),
        (dict(min_new_tokens=-1), "min_new_tokens must be >= 0"),
        (dict(min_p=1.5), r"min_p must be in \[0, 1\]"),
        (dict(typical_p=0.0), r"typical_p must be in \(0, 1\]"),
        (dict(eta_cutoff=1.0), r"eta_cutoff must be in \[0, 1\)"),
    ]
    for change, message in bad:
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            call(**change)
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected to be a int32 tensor but is a int64"):
        fn(input_ids=tf.constant(ids, tf.int64), attention_mask=tf.constant(mask),
           **{name: tf.constant(value, spec[name].dtype) for name, value in knobs.items()})


@pytest.mark.slow
def test_contrastive_signature(hf_and_minigen, tmp_path):
    """The contrastive signature (any batch size, top_k fixed at export) gives generate's tokens
    for two alphas from one export, and refuses a bad alpha by name."""
    import tensorflow as tf

    from minigen.export import export

    _, _, model = hf_and_minigen("tiny")
    export(model, str(tmp_path / "saved"), batch_size=None, bucket=16, max_new_tokens=8,
           strategies=("contrastive",), top_k=3)
    fn = tf.saved_model.load(str(tmp_path / "saved")).signatures["contrastive"]
    assert set(fn.structured_input_signature[1]) == {"input_ids", "attention_mask", "penalty_alpha",
                                                      "repetition_penalty", "min_new_tokens"}
    ids, mask = left_padded_batch(np.random.default_rng(5), 511, [4, 16, 9], pad_id=1)
    pad = model.config.eos_token_id

    def call(alpha, penalty=1.0):
        return fn(input_ids=tf.constant(ids, tf.int32), attention_mask=tf.constant(mask, tf.int32),
                  penalty_alpha=tf.constant(alpha), repetition_penalty=tf.constant(penalty),
                  min_new_tokens=tf.constant(0))["sequences"].numpy()

    outputs = []
    for alpha in (0.3, 0.8):
        expected = model.generate(ids, mask, max_new_tokens=8, pad_token_id=pad, penalty_alpha=alpha, top_k=3)
        got = call(alpha)
        np.testing.assert_array_equal(got[:, 16:], expected[:, 16:], err_msg=str(alpha))
        outputs.append(got)
    assert not np.array_equal(*outputs)  # alpha reaches the exported graph
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"penalty_alpha must be a number in \[0, 1\]"):
        call(1.5)
    with pytest.raises(ValueError, match="top_k must be in \\[2, 512\\] for the contrastive signature"):
        export(model, str(tmp_path / "bad"), strategies=("contrastive",), top_k=1)
