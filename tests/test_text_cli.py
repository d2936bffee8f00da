"""The text API (`generate_text`) and the `minigen` command, on a random GPT-2 with a small BPE
tokenizer trained here (so nothing outside the repo is needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from conftest import build_hf_model

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "A journey of a thousand miles begins with a single step.",
    "To be, or not to be, that is the question.",
    "All that glitters is not gold; naïve café owners know it.",
] * 20
PROMPTS = ["The quick brown", "To be", "A journey of a thousand miles begins", "All that"]


def train_tokenizer(vocab_size: int = 320):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    return tok


@pytest.fixture(scope="module")
def text_model_dir(tmp_path_factory):
    """(minigen directory with tokenizer.json, the loaded model)."""
    import minigen
    from weights_tools.convert import convert

    root = tmp_path_factory.mktemp("text-model")
    tok = train_tokenizer()
    eos = tok.token_to_id("<|endoftext|>")
    hf = build_hf_model("tiny", vocab_size=tok.get_vocab_size(), bos_token_id=eos, eos_token_id=eos)
    hf.save_pretrained(root / "hf")
    tok.save(str(root / "hf" / "tokenizer.json"))
    convert(str(root / "hf"), str(root / "minigen"), quiet=True)
    return root / "minigen", minigen.load(root / "minigen")


def minigen_cli(*args, stdin: str | None = None, timeout: int = 300):
    """Run the installed `minigen` entry point (falls back to `python -m minigen.cli`)."""
    exe = os.path.join(os.path.dirname(sys.executable), "minigen")
    cmd = [exe] if os.path.exists(exe) else [sys.executable, "-m", "minigen.cli"]
    return subprocess.run(cmd + [str(a) for a in args], input=stdin, capture_output=True, text=True, timeout=timeout)


def test_load_attaches_the_tokenizer(text_model_dir):
    _, lm = text_model_dir
    assert lm.tokenizer is not None and lm.tokenizer.pad_id == lm.config.eos_token_id


def test_generate_text_batch_equals_each_prompt_alone(text_model_dir):
    _, lm = text_model_dir
    together = lm.generate_text(PROMPTS, max_new_tokens=12)
    alone = [lm.generate_text(p, max_new_tokens=12)[0] for p in PROMPTS]
    assert together == alone
    assert len(set(together)) > 1  # not a degenerate constant output


def test_generate_text_matches_token_level_generate(text_model_dir):
    _, lm = text_model_dir
    tok = lm.tokenizer
    ids = np.array([tok.encode(PROMPTS[0])])
    seq = lm.generate(ids, max_new_tokens=10, pad_token_id=tok.pad_id)
    expected = tok.decode(seq[0, ids.shape[1]:])
    assert lm.generate_text(PROMPTS[0], max_new_tokens=10) == [expected]
    assert lm.generate_text(PROMPTS[0], max_new_tokens=10, return_full_text=True) == [PROMPTS[0] + expected]


def test_generate_text_rejects_empty_prompts(text_model_dir):
    _, lm = text_model_dir
    with pytest.raises(ValueError, match=r"prompts\[1\] is empty"):
        lm.generate_text(["ok", ""], max_new_tokens=2)


def test_two_threads_get_their_own_results(text_model_dir):
    _, lm = text_model_dir
    jobs = {"greedy": (PROMPTS[:2], dict(max_new_tokens=10)),
            "sample": (PROMPTS[2:], dict(max_new_tokens=10, do_sample=True, seed=(3, 4)))}
    alone = {k: lm.generate_text(p, **o) for k, (p, o) in jobs.items()}
    got = {}

    def work(key):
        prompts, options = jobs[key]
        for _ in range(3):
            got.setdefault(key, []).append(lm.generate_text(prompts, **options))

    threads = [threading.Thread(target=work, args=(k,)) for k in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for key in jobs:
        assert got[key] == [alone[key]] * 3


def test_cli_generate_matches_the_api(text_model_dir):
    path, lm = text_model_dir
    result = minigen_cli("generate", PROMPTS[0], "--model", path, "--max-new-tokens", 8)
    assert result.returncode == 0, result.stderr
    assert result.stdout == PROMPTS[0] + lm.generate_text(PROMPTS[0], max_new_tokens=8)[0] + "\n"


def test_cli_stdin_and_input_output_round_trip(text_model_dir, tmp_path):
    path, lm = text_model_dir
    expected = lm.generate_text(PROMPTS, max_new_tokens=6)
    piped = minigen_cli("generate", "--model", path, "--max-new-tokens", 6, stdin="\n".join(PROMPTS) + "\n")
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.splitlines() == [p + t for p, t in zip(PROMPTS, expected)]

    (tmp_path / "prompts.txt").write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    result = minigen_cli("generate", "--model", path, "--max-new-tokens", 6, "--input", tmp_path / "prompts.txt",
                         "--output", out, "--batch-size", 3)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["prompt"] for r in records] == PROMPTS
    assert [r["text"] for r in records] == expected
    assert "4/4 prompts" in result.stderr  # progress bar over two batches


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["generate", "x", "--model", "/nonexistent/model"], 1, "does not exist"),
        (["generate", "x", "--model", "{model}", "--top-p", "1.5"], 2, "top_p"),
        (["generate", "x", "--model", "{model}", "--max-new-tokens", "zero"], 2, "--max-new-tokens"),
        (["generate", "", "--model", "{model}"], 2, "empty"),
        (["generate", "x", "--model", "{model}", "--no-such-flag"], 2, "unrecognized"),
    ],
)
def test_cli_bad_usage_is_one_line_without_traceback(text_model_dir, args, code, message):
    path, _ = text_model_dir
    result = minigen_cli(*[a.replace("{model}", str(path)) for a in args])
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") <= 2  # argparse prints usage + one error line


def test_cli_convert_is_the_converter(tmp_path):
    hf = build_hf_model("tiny")
    hf.save_pretrained(tmp_path / "hf")
    result = minigen_cli("convert", tmp_path / "hf", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "model.safetensors").is_file()
    again = minigen_cli("convert", tmp_path / "hf", tmp_path / "out")
    assert again.returncode == 1 and "exists" in again.stderr and "Traceback" not in again.stderr


@pytest.mark.parametrize("chunk_size", [1, 3, 16])
def test_stream_tokens_equal_one_shot(text_model_dir, chunk_size):
    _, lm = text_model_dir
    tok = lm.tokenizer
    ids, mask = tok.encode_batch(PROMPTS)
    for options in (dict(), dict(do_sample=True, seed=(5, 6), top_p=0.9)):
        one_shot = lm.generate(ids, mask, max_new_tokens=11, pad_token_id=tok.pad_id, **options)[:, ids.shape[1]:]
        chunks = list(lm.stream_tokens(ids, mask, chunk_size=chunk_size, max_new_tokens=11,
                                       pad_token_id=tok.pad_id, **options))
        assert all(c.shape[1] <= chunk_size for c in chunks)
        streamed = np.concatenate(chunks, axis=1)
        np.testing.assert_array_equal(streamed, one_shot[:, :streamed.shape[1]])
        assert (one_shot[:, streamed.shape[1]:] == tok.pad_id).all()  # only an all-finished tail is cut


def test_stream_text_joins_to_generate_text(text_model_dir):
    _, lm = text_model_dir
    pieces = list(lm.stream(PROMPTS[2], chunk_size=2, max_new_tokens=9))
    assert len(pieces) > 1
    assert "".join(pieces) == lm.generate_text(PROMPTS[2], max_new_tokens=9)[0]


def test_stream_compiles_once_per_bucket(text_model_dir):
    _, lm = text_model_dir
    list(lm.stream(PROMPTS[0], max_new_tokens=7))
    traces = lm.trace_count
    list(lm.stream(PROMPTS[1], max_new_tokens=7, chunk_size=8))
    list(lm.stream(PROMPTS[3], max_new_tokens=7, chunk_size=8))
    assert lm.trace_count == traces


def test_cli_stream_equals_non_streamed(text_model_dir):
    path, _ = text_model_dir
    plain = minigen_cli("generate", PROMPTS[1], "--model", path, "--max-new-tokens", 9)
    streamed = minigen_cli("generate", PROMPTS[1], "--model", path, "--max-new-tokens", 9, "--stream")
    assert plain.returncode == 0 and streamed.returncode == 0, streamed.stderr
    assert streamed.stdout == plain.stdout


def test_continuing_from_a_state_equals_generating_from_the_concatenation(text_model_dir):
    _, lm = text_model_dir
    tok = lm.tokenizer
    first = ["The quick brown", "A journey of a thousand miles"]
    second = [" and then", " To be, or not"]
    for options in (dict(), dict(do_sample=True, seed=(7, 8), top_k=0)):
        ids1, mask1 = tok.encode_batch(first)
        out1 = lm.generate(ids1, mask1, max_new_tokens=6, eos_token_id=[], return_state=True, **options)
        ids2, mask2 = tok.encode_batch(second)
        out2 = lm.generate(ids2, mask2, max_new_tokens=7, eos_token_id=[], cache=out1.state, **options)
        assert out2.shape == (2, ids2.shape[1] + 7)  # the new segment's layout, as if it were the prompt
        assert out1.state.cache.keys[0].shape[1] == out1.state.width  # the state holds the filled cache

        # the same conversation as one left-padded batch of token histories, generated from scratch
        histories = []
        for row in range(2):
            turn1 = [int(t) for t, m in zip(out1.sequences[row], np.r_[mask1[row], np.ones(6)]) if m]
            histories.append(turn1 + [int(t) for t, m in zip(ids2[row], mask2[row]) if m])
        width = max(map(len, histories))
        ids = np.array([[tok.pad_id] * (width - len(h)) + h for h in histories])
        mask = np.array([[0] * (width - len(h)) + [1] * len(h) for h in histories])
        scratch = lm.generate(ids, mask, max_new_tokens=7, eos_token_id=[], **options)
        np.testing.assert_array_equal(out2[:, -7:], scratch[:, -7:])


def test_continuing_rejects_beams_and_mismatched_rows(text_model_dir):
    _, lm = text_model_dir
    ids, mask = lm.tokenizer.encode_batch(["one", "two"])
    with pytest.raises(ValueError, match="num_beams"):
        lm.generate(ids, mask, max_new_tokens=2, num_beams=2, return_state=True)
    state = lm.generate(ids, mask, max_new_tokens=2, return_state=True).state
    with pytest.raises(ValueError, match="2 rows"):
        lm.generate(ids[:1], mask[:1], max_new_tokens=2, cache=state)


def test_cli_verbose_reports_compile_and_speed(text_model_dir):
    path, _ = text_model_dir
    result = minigen_cli("generate", "--model", path, "--max-new-tokens", 5, "--verbose", "--batch-size", 1,
                         stdin=PROMPTS[0] + "\n" + PROMPTS[1] + "\n")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("minigen: compiled greedy") == 1  # the one-off XLA compile, with its time
    assert "minigen: generated 1 x 5 tokens in" in result.stderr and "tok/s" in result.stderr  # the second batch


def test_make_demo_runs():
    """What `make demo` runs (the Makefile's demo target calls `python -m minigen.demo`)."""
    from pathlib import Path

    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    assert "-m minigen.demo" in makefile
    result = subprocess.run([sys.executable, "-m", "minigen.demo", "--max-new-tokens", "3"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "greedy" in result.stdout and "beam search" in result.stdout


def test_cli_speculative_flags_equal_plain_greedy():
    """--assistant-model (the shipped draft) and --prompt-lookup print plain greedy's text."""
    prompt = "It was the best of times, it was the worst of times,"
    plain = minigen_cli("generate", prompt, "--max-new-tokens", 24)
    draft = minigen_cli("generate", prompt, "--max-new-tokens", 24, "--assistant-model", "gutenberg-2l", "--verbose")
    lookup = minigen_cli("generate", prompt, "--max-new-tokens", 24, "--prompt-lookup", 6)
    assert plain.returncode == draft.returncode == lookup.returncode == 0, draft.stderr + lookup.stderr
    assert draft.stdout == plain.stdout and lookup.stdout == plain.stdout
    assert "candidates accepted per step" in draft.stderr
