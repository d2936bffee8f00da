"""What a new user coming from transformers, and a hostile input, meet first (issue 30): each kind of
case is refused by name before anything compiles, or behaves as the reference does, and nothing of
the user's is widened, read early or lost."""

from __future__ import annotations

import json
import os
import re
import stat
import warnings

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import minigen
from minigen.generation import GenerationConfig
from weights_tools.convert import convert
from weights_tools.hf_checkpoint import CheckpointError


# ---- the reference's habits: its config object, its option names, its result and tokenizer ------


@pytest.mark.parametrize("option", ["output_logprobs", "output_scores", "return_dict", "return_state",
                                    "return_dict_in_generate"])
def test_text_api_refuses_token_outputs_before_compiling(text_model_dir, option):
    _, lm = text_model_dir
    traces = lm.trace_count
    with pytest.raises(ValueError, match=f"generate_text returns text; {option} is for model.generate"):
        lm.generate_text("The quick", max_new_tokens=3, **{option: True})
    with pytest.raises(ValueError, match=f"stream returns text; {option}"):
        next(lm.stream("The quick", max_new_tokens=3, **{option: True}))
    assert lm.trace_count == traces


def test_transformers_generation_config_is_read_as_the_reference_reads_it(hf_and_minigen):
    import torch
    import transformers

    hf, _, model = hf_and_minigen("tiny")
    ids = np.array([[5, 9, 33, 2, 8]])
    config = transformers.GenerationConfig(max_new_tokens=6, repetition_penalty=1.4, no_repeat_ngram_size=2,
                                           eos_token_id=None, pad_token_id=0)
    ours = model.generate(ids, generation_config=config)
    with torch.no_grad():
        ref = hf.generate(torch.tensor(ids), attention_mask=torch.ones_like(torch.tensor(ids)),
                          generation_config=config).numpy()
    assert ours.shape[1] == ids.shape[1] + 6  # the reference stops at EOS: the rest of ours is pad
    np.testing.assert_array_equal(ours[:, :ref.shape[1]], ref)
    assert (ours[:, ref.shape[1]:] == 0).all()
    with pytest.raises(ValueError, match="low_memory is an option of transformers' generate "
                                         "that minigen does not support: beam search always"):
        model.generate(ids, generation_config=transformers.GenerationConfig(num_beams=2, low_memory=True))


def test_generation_config_json_gives_the_models_defaults_as_in_the_reference(tmp_path):
    """A checkpoint whose generation_config.json sets options: minigen.load reads it (convert copies it),
    and generate with no options gives the reference's generate with no options."""
    import torch

    from conftest import build_hf_model

    hf = build_hf_model("tiny", seed=4)
    hf.generation_config.max_new_tokens = 7
    hf.generation_config.repetition_penalty = 1.6
    hf.generation_config.pad_token_id = 0
    hf.save_pretrained(tmp_path / "hf")
    convert(str(tmp_path / "hf"), str(tmp_path / "m"), quiet=True)
    lm = minigen.load(tmp_path / "m")
    assert lm.generation_config.max_new_tokens == 7 and lm.generation_config.repetition_penalty == 1.6
    ids = np.array([[3, 3, 3, 17, 40]])
    with torch.no_grad():
        ref = hf.generate(torch.tensor(ids), attention_mask=torch.ones_like(torch.tensor(ids))).numpy()
    ours = lm.generate(ids)
    assert ours.shape[1] == ids.shape[1] + 7
    np.testing.assert_array_equal(ours[:, :ref.shape[1]], ref)
    assert lm.generate(ids, max_new_tokens=2).shape[1] == ids.shape[1] + 2  # a call's option wins
    (tmp_path / "m" / "generation_config.json").write_text(json.dumps({"top_p": 7}))
    with pytest.raises(minigen.LoadError, match=r"generation_config.json: top_p must be"):
        minigen.load(tmp_path / "m")


@pytest.mark.parametrize("options, message", [
    (dict(force_words_ids=[[2]]), "force_words_ids is an option of transformers' generate that minigen does not "
                                  "support: constrained beam search"),
    (dict(streamer=object()), "streamer is an option of transformers' generate .* use model.stream"),
    (dict(use_cache=False), "use_cache=False is not supported"),
    (dict(temprature=0.5), "unknown generate option 'temprature'; did you mean temperature?"),
    (dict(max_new_token=3), "did you mean max_new_tokens?"),
    (dict(return_dict=False, return_dict_in_generate=True), "return_dict_in_generate is the reference's name for "
                                                             "return_dict"),
], ids=["force-words", "streamer", "use-cache", "typo", "typo-2", "alias-conflict"])
def test_options_the_reference_has_are_told_apart_from_typos(hf_and_minigen, options, message):
    _, _, model = hf_and_minigen("tiny")
    traces = model.trace_count
    with pytest.raises(ValueError, match=message):
        model.generate([[1, 2, 3]], max_new_tokens=2, **options)
    assert model.trace_count == traces


def test_the_references_names_are_accepted(hf_and_minigen):
    _, _, model = hf_and_minigen("tiny")
    plain = model.generate([[4, 5, 6]], max_new_tokens=3, return_dict=True)
    out = model.generate(inputs=[[4, 5, 6]], max_new_tokens=3, return_dict_in_generate=True, use_cache=True)
    np.testing.assert_array_equal(out["sequences"], plain.sequences)  # subscriptable, as HF's ModelOutput
    assert out.keys() == ["sequences"] and out[0] is out.sequences and "sequences" in out
    with pytest.raises(KeyError, match="this output holds sequences"):
        out["scores"]


def test_tokenizer_is_callable_and_batch_decodes(text_model_dir):
    _, lm = text_model_dir
    tok = lm.tokenizer
    one = tok("The quick brown")
    assert one["input_ids"] == tok.encode("The quick brown") and one["attention_mask"] == [1] * len(one["input_ids"])
    batch = tok(["To be", "A journey of a thousand"], pad_to_multiple_of=8)
    ids, mask = tok.encode_batch(["To be", "A journey of a thousand"], pad_to_multiple_of=8)
    np.testing.assert_array_equal(batch["input_ids"], ids)
    np.testing.assert_array_equal(batch["attention_mask"], mask)
    assert tok.batch_decode(ids[:, -2:]) == [tok.decode(r) for r in ids[:, -2:]]
    with pytest.raises(ValueError, match="return_tensors must be None or 'np'"):
        tok("x", return_tensors="pt")


@pytest.mark.parametrize("options", [dict(temperature=0.7), dict(top_p=0.9), dict(top_k=5), dict(min_p=0.1),
                                     dict(num_beams=2, temperature=0.5), dict(penalty_alpha=0.5, top_k=3,
                                                                              temperature=0.5)],
                         ids=["temperature", "top_p", "top_k", "min_p", "beam-temperature", "contrastive-temperature"])
def test_every_warper_without_sampling_is_refused_alike(hf_and_minigen, options):
    _, _, model = hf_and_minigen("tiny")
    name = next(n for n in ("temperature", "top_p", "min_p", "top_k") if n in options)
    with pytest.raises(ValueError, match=f"{name} is a sampling warper: set do_sample=True, or leave it at"):
        model.generate([[1, 2, 3]], max_new_tokens=2, **options)
    model.generate([[1, 2, 3]], max_new_tokens=2, penalty_alpha=0.5, top_k=3)  # contrastive search reads top_k
    model.generate([[1, 2, 3]], max_new_tokens=2, top_k=0, temperature=1.0)  # values that leave a warper off


# ---- numbers that a tensor cannot hold -------------------------------------------------------------


@pytest.mark.parametrize("options, message", [
    (dict(do_sample=True, temperature=1e-50), "temperature must be a finite number > 0 that float32 can hold"),
    (dict(repetition_penalty=1e-50), "repetition_penalty must be .* that float32 can hold"),
    (dict(do_sample=True, top_p=1e-46), "top_p must be .* that float32 can hold"),
    (dict(num_beams=2, length_penalty=1e39), "length_penalty must be .* that float32 can hold"),
    (dict(exponential_decay_length_penalty=(2**32 + 2, 2.0)), r"the start at most 2\*\*31 - 1"),
    (dict(sequence_bias={(3,): 1e-60}), "sequence_bias values must be numbers float32 can hold"),
    (dict(suppress_tokens=[2**33]), r"suppress_tokens must be token ids in \[0, 512\)"),
    (dict(stop_strings=["ok", "\ud800"]), r"stop_strings\[1\] holds a lone surrogate"),
    (dict(bad_words_ids=[[1]] * 5000), "bad_words_ids: at most 4096 entries"),
], ids=["temperature", "repetition", "top_p", "length_penalty", "decay-start", "bias", "int-ids", "surrogate",
        "many-words"])
def test_values_a_tensor_cannot_hold_are_refused(hf_and_minigen, options, message):
    _, _, model = hf_and_minigen("tiny")
    traces = model.trace_count
    with pytest.raises(ValueError, match=message):
        model.generate([[1, 2, 3]], max_new_tokens=2, **options)
    assert model.trace_count == traces


def test_too_many_stop_strings_are_refused_with_the_limit(text_model_dir):
    _, lm = text_model_dir
    with pytest.raises(ValueError, match="stop_strings: at most 64 strings of 1024 UTF-8 bytes in all, got 65"):
        lm.generate_text("The quick", max_new_tokens=2, stop_strings=[f"w{i}" for i in range(65)])


@pytest.mark.slow
def test_a_processor_returning_nan_is_reported_not_hidden(hf_and_minigen):
    import tensorflow as tf

    _, _, model = hf_and_minigen("tiny")

    def broken(sequences, valid, generated, logits):
        return tf.where(generated >= 2, logits * float("nan"), logits)

    for options in (dict(), dict(num_beams=2), dict(penalty_alpha=0.5, top_k=3)):
        with pytest.raises(ValueError, match=r"logits_processor \(.*broken\) returned NaN scores for row\(s\) \[0"):
            model.generate([[1, 2, 3], [4, 5, 6]], max_new_tokens=4, logits_processor=[broken], **options)
    with pytest.raises(ValueError, match="returned NaN scores"):
        list(model.stream_tokens([[1, 2, 3]], max_new_tokens=4, logits_processor=[broken]))
    fine = model.generate([[1, 2, 3]], max_new_tokens=4, logits_processor=[lambda s, v, g, x: x - 1.0])
    np.testing.assert_array_equal(fine, model.generate([[1, 2, 3]], max_new_tokens=4))


def test_compute_transition_scores_refuses_what_it_cannot_score(hf_and_minigen):
    _, _, model = hf_and_minigen("tiny")
    out = model.generate([[1, 2, 3], [4, 5, 6]], max_new_tokens=3, output_scores=True)
    seqs, scores = out.sequences, out.scores
    bad = seqs.copy()
    bad[0, -1] = -1
    cases = [((seqs, None), "scores must be generate's scores"),
             ((bad, scores), r"token id -1 outside the scores' vocabulary \[0, 512\)"),
             ((seqs.astype(np.float32), scores), "sequences must hold integer token ids"),
             ((seqs, scores, np.full((2, 3), 5)), r"beam_indices must be beam rows of scores in \[0, 2\)"),
             ((seqs, scores, np.zeros((2, 3), np.float32)), "beam_indices must be an integer array")]
    for args, message in cases:
        with pytest.raises(ValueError, match=message):
            model.compute_transition_scores(*args)


def test_scores_too_large_for_memory_are_refused_before_compiling(hf_and_minigen, monkeypatch):
    from minigen.generation import generate as generation

    _, _, model = hf_and_minigen("tiny")
    monkeypatch.setattr(generation, "available_memory", lambda: 10 * 2**20)  # 10 MiB free
    traces = model.trace_count
    # 64 rows x 60 steps x 512 x 4 bytes = 7.5 MiB per buffer, about 3x that at its peak
    with pytest.raises(ValueError, match=r"output_scores and output_logits for 64 rows x 60 new tokens x 512 "
                                         r"vocabulary need about 0.0 GiB at their peak \(3x"):
        model.generate(np.ones((64, 4), np.int32), max_new_tokens=60, output_scores=True, output_logits=True)
    assert model.trace_count == traces


# ---- bounded compile cost ------------------------------------------------------------------------------


def test_word_lists_travel_as_tensors_and_fresh_lambdas_reuse_the_compile(hf_and_minigen):
    _, _, model = hf_and_minigen("tiny")
    rng = np.random.default_rng(0)
    words = lambda: [[int(a), int(b)] for a, b in rng.integers(0, 512, (300, 2))]  # noqa: E731
    model.generate([[1, 2, 3]], max_new_tokens=4, bad_words_ids=words(), sequence_bias={(7, 8): 2.0, (9,): -1.0})
    traces = model.trace_count
    for _ in range(3):  # other words of the same lengths and counts, a new lambda each call
        model.generate([[1, 2, 3]], max_new_tokens=4, bad_words_ids=words(),
                       sequence_bias={(int(rng.integers(512)), 8): 2.0, (9,): -1.0})
        model.generate([[1, 2, 3]], max_new_tokens=4, logits_processor=[lambda s, v, g, x: x * 0.5])
    assert model.trace_count == traces + 1  # only the first lambda's key compiled


@pytest.mark.slow
def test_a_recompile_after_eviction_warns_and_is_counted(hf_dir_tiny):
    model = minigen.load(hf_dir_tiny, compile_cache_size=2)
    for n in (2, 3):
        model.generate([[1, 2, 3]], max_new_tokens=n)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        model.generate([[1, 2, 3]], max_new_tokens=4)  # evicts the first key: no warning yet
        assert not [w for w in seen if issubclass(w.category, RuntimeWarning)]
        model.generate([[1, 2, 3]], max_new_tokens=2)  # compiled again
    said = [str(w.message) for w in seen if issubclass(w.category, RuntimeWarning)]
    assert len(said) == 1 and "compiles a function again that its compile cache (maxsize 2) had evicted" in said[0]
    stats = model.compile_cache.stats()
    assert stats["recompiles"] == 1 and stats["entries"] == 2 and stats["maxsize"] == 2


@pytest.fixture
def hf_dir_tiny(hf_and_minigen):
    _, hf_dir, _ = hf_and_minigen("tiny")
    return hf_dir.parent / "minigen"


# ---- files: checked from the header first, never widened, never followed out ---------------------------


def test_a_model_that_does_not_fit_its_config_is_refused_from_the_header(hf_dir_tiny, tmp_path, monkeypatch):
    import shutil

    import minigen.weights as weights

    m = tmp_path / "m"
    shutil.copytree(hf_dir_tiny, m)
    config = json.loads((m / "config.json").read_text())
    read = []
    monkeypatch.setattr(weights, "read_safetensors", lambda *a: read.append(a) or pytest.fail("tensors read"))
    (m / "config.json").write_text(json.dumps({**config, "n_layer": 2_000_000}))
    with pytest.raises(minigen.LoadError, match="missing tensor.*n_layer 2000000; the file holds 2 blocks"):
        minigen.load(m)
    (m / "config.json").write_text(json.dumps(config))
    monkeypatch.undo()
    tensors = load_file(m / "model.safetensors")
    save_file({**tensors, "extra": np.zeros((4, 4), np.float32)}, m / "model.safetensors",
              metadata={"format": "minigen", "minigen_format_version": "1"})
    monkeypatch.setattr(weights, "read_safetensors", lambda *a: pytest.fail("tensors read"))
    with pytest.raises(minigen.LoadError, match="config.json does not describe: extra"):
        minigen.load(m)
    save_file({**tensors, "wpe": tensors["wpe"].astype(np.int32)}, m / "model.safetensors",
              metadata={"format": "minigen", "minigen_format_version": "1"})
    with pytest.raises(minigen.LoadError, match="'wpe' has dtype int32"):
        minigen.load(m)


def test_config_and_tokenizer_that_cannot_be_used_are_refused_at_load(hf_dir_tiny, text_model_dir, tmp_path):
    import shutil

    m = tmp_path / "m"
    shutil.copytree(hf_dir_tiny, m)
    (m / "config.json").write_text("[" * 5000 + "]" * 5000)
    with pytest.raises(minigen.LoadError, match="nested too deeply"):
        minigen.load(m)
    shutil.copy(hf_dir_tiny / "config.json", m / "config.json")
    text_dir, _ = text_model_dir
    shutil.copy(text_dir / "tokenizer.json", m / "tokenizer.json")  # 320 tokens for a 512-token model
    with pytest.raises(minigen.LoadError, match="the tokenizer has 320 tokens but the model's vocab_size is 512"):
        minigen.load(m)
    with pytest.raises(minigen.LoadError, match=r"does not exist \(shipped models: gutenberg-2l, gutenberg-6l"):
        minigen.load("gpt2")


def test_convert_refuses_links_out_of_src_and_never_widens_permissions(hf_and_minigen, tmp_path):
    import shutil

    _, src0, _ = hf_and_minigen("tiny")
    src = tmp_path / "hf"
    shutil.copytree(src0, src)
    secret = tmp_path / "secret.json"
    secret.write_text("{}")
    os.chmod(secret, 0o600)
    (src / "vocab.json").symlink_to(secret)
    with pytest.raises(CheckpointError, match="vocab.json is a link to .*secret.json, outside"):
        convert(str(src), str(tmp_path / "out"), quiet=True)
    assert not (tmp_path / "out").exists()
    (src / "vocab.json").unlink()
    (src / "vocab.json").write_text("{}")
    os.chmod(src / "vocab.json", 0o600)
    convert(str(src), str(tmp_path / "out"), quiet=True)
    assert stat.S_IMODE(os.stat(tmp_path / "out" / "vocab.json").st_mode) == 0o600
    with pytest.raises(CheckpointError, match="is already a minigen model .*convert takes a Hugging Face"):
        convert(str(tmp_path / "out"), str(tmp_path / "again"), quiet=True)


def test_a_shard_index_naming_files_outside_src_is_refused(hf_and_minigen, tmp_path):
    import shutil

    _, src0, _ = hf_and_minigen("tiny")
    src = tmp_path / "hf"
    shutil.copytree(src0, src)
    shutil.copy(src / "model.safetensors", tmp_path / "elsewhere.safetensors")
    (src / "model.safetensors").unlink()
    (src / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"wte.weight": "../elsewhere.safetensors"}}))
    with pytest.raises(CheckpointError, match="names shard.s. outside"):
        convert(str(src), str(tmp_path / "out"), quiet=True)


def test_export_refuses_bad_types_and_creates_parents(hf_dir_tiny, tmp_path, hf_and_minigen):
    from minigen.export import export

    _, _, model = hf_and_minigen("tiny")
    for options, message in ((dict(bucket=True), "bucket must be an int >= 1, got True"),
                             (dict(batch_size=2.5), "batch_size must be an int >= 1 or None")):
        with pytest.raises(ValueError, match=message):
            export(model, str(tmp_path / "bad"), **options)
    out = export(model, str(tmp_path / "models" / "tiny" / "1"), bucket=8, max_new_tokens=2)
    assert os.path.isfile(os.path.join(out, "saved_model.pb"))


# ---- the command line: flags in messages, never silent, never a traceback --------------------------------


def test_cli_tells_unsupported_flags_from_typos_and_names_flags(text_model_dir, cli):
    path, _ = text_model_dir
    run = lambda *a: cli("generate", "The quick", "--model", path, "--max-new-tokens", 2, *a)  # noqa: E731
    typo = run("--max-new-token", "3")
    assert typo.returncode == 2 and "unrecognized arguments: --max-new-token 3; did you mean --max-new-tokens?" \
        in typo.stderr
    hf_only = run("--low-memory")
    assert hf_only.returncode == 2 and "--low-memory (transformers' low_memory) is not supported" in hf_only.stderr
    python_only = run("--output-hidden-states")
    assert python_only.returncode == 2 and "--output-hidden-states: output_hidden_states is an option of Python's " \
        "model.generate (the command writes text)" in python_only.stderr
    warper = run("--temperature", "0.5")
    assert warper.returncode == 2 and "--temperature is a sampling warper: set --do-sample" in warper.stderr
    assert "do_sample" not in warper.stderr and "=True" not in warper.stderr
    beams = run("--num-beams", "2", "--stop", "x")
    assert beams.returncode == 2 and "--stop work with greedy search" in beams.stderr and "--num-beams > 1" in beams.stderr
    surrogate = run("--stop", "\udcff")  # an undecodable byte on the command line
    assert surrogate.returncode == 2 and "--stop[0] holds a lone surrogate" in surrogate.stderr
    version = cli("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"minigen {minigen.__version__}"
    assert "Traceback" not in typo.stderr + hf_only.stderr + warper.stderr + beams.stderr + surrogate.stderr


@pytest.mark.slow
def test_cli_stream_says_when_max_time_cut_it(text_model_dir, cli):
    path, _ = text_model_dir
    done = cli("generate", "The quick", "--model", path, "--max-new-tokens", 60, "--stream", "--max-time", "1e-9")
    assert done.returncode == 0, done.stderr
    assert "minigen: stopped by --max-time 1e-09 after" in done.stderr and "cut short" in done.stderr
    whole = cli("generate", "The quick", "--model", path, "--max-new-tokens", 6, "--stream", "--max-time", "600")
    assert whole.returncode == 0 and "stopped by --max-time" not in whole.stderr


@pytest.mark.slow
def test_cli_status_lines_are_whole_lines_in_files(text_model_dir, cli, tmp_path, monkeypatch):
    """Into a file or pipe the command is never silent through a compile, writes no carriage returns, and
    --verbose keeps the calls that compiled apart from the steady speed."""
    import minigen.status

    path, _ = text_model_dir
    monkeypatch.setattr(minigen.status, "NOTICE_AFTER", 0.0)
    (tmp_path / "in.txt").write_text("".join(f"{p}\n" for p in ["The quick", "To be", "All that", "A journey"]))
    done = cli("generate", "--model", path, "--input", tmp_path / "in.txt", "--output", tmp_path / "out.jsonl",
               "--batch-size", 2, "--max-new-tokens", 5, "--top-k", 50, "--verbose", "--repetition-penalty", "1.01")
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr
    # the request engine (these options are its): each compile announced, then done with its time
    assert "minigen: compiling the engine's prefill (1 x 16 tokens) ...\n" in done.stderr
    assert re.search(r"minigen: compiling the engine's decode step \(2 slots x 16 tokens\) \.\.\. \d+\.\d s\n",
                     done.stderr)
    assert "minigen: 4/4 prompts" in done.stderr
    assert "minigen: 4 prompts over 2 slots of the request engine in " in done.stderr
    # generate calls (beam search is not the engine's): the calls that compiled kept apart from the steady speed
    done = cli("generate", "--model", path, "--input", tmp_path / "in.txt", "--batch-size", 2, "--max-new-tokens", 5,
               "--num-beams", 2, "--verbose", "--output", tmp_path / "beams.jsonl")
    assert done.returncode == 0 and "\r" not in done.stderr, done.stderr
    assert re.search(r"minigen: compiling beam for 4 rows x bucket 16 \(\+5 new\) \.\.\. \d+\.\d s\n", done.stderr)
    assert "minigen: 2 generate calls: " in done.stderr and "s in calls that compiled (compile + their run); " \
        in done.stderr and "tok/s over the calls that compiled nothing" in done.stderr
    mode = stat.S_IMODE(os.stat(tmp_path / "out.jsonl").st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # what a new file gets, not mkstemp's 0600


def test_cli_export_checks_everything_before_loading(hf_dir_tiny, tmp_path, cli, monkeypatch):
    monkeypatch.setattr(minigen, "load", lambda *a, **k: pytest.fail("loaded before the flags were checked"))
    for flags, message in ((["--bucket", "0"], "bucket must be an int >= 1"),
                           (["--strategy", "nucleus"], "--strategy: strategies must be a non-empty subset"),
                           (["--bucket", "100", "--max-new-tokens", "100"], "exceeds n_positions 128")):
        bad = cli("export", hf_dir_tiny, tmp_path / "x", *flags)
        assert bad.returncode == 2 and message in bad.stderr and "Traceback" not in bad.stderr, bad.stderr


def test_speculative_compiles_are_described_as_such(hf_and_minigen):
    from minigen.generation.core import compile_key
    from minigen.generation.generate import describe

    _, _, model = hf_and_minigen("tiny")
    cfg = GenerationConfig(max_new_tokens=4, prompt_lookup_num_tokens=3).check()
    key = compile_key(cfg, model.config, 1, 16, speculation="lookup")
    assert describe(key) == "speculative greedy (prompt lookup, 3 candidates per step) for 1 row x bucket 16 (+4 new)"


@pytest.mark.slow
def test_weights_tools_and_demo_print_no_tensorflow_noise(hf_dir_tiny, hf_and_minigen):
    import subprocess
    import sys

    _, src, _ = hf_and_minigen("tiny")
    done = subprocess.run([sys.executable, "-m", "weights_tools", "verify", str(hf_dir_tiny), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith("verify: max abs logit difference"), done.stderr
    assert "cuInit" not in done.stderr and "absl" not in done.stderr
