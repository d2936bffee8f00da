"""The text API: generate_text, streaming, continuing a state, threads; on a random GPT-2 with a
small BPE tokenizer trained here (conftest.text_model_dir), so nothing outside the repo is needed."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from conftest import PROMPTS


def test_load_attaches_the_tokenizer(text_model_dir):
    _, lm = text_model_dir
    assert lm.tokenizer is not None and lm.tokenizer.pad_id == lm.config.eos_token_id


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_stream_compiles_once_per_bucket(text_model_dir):
    _, lm = text_model_dir
    list(lm.stream(PROMPTS[0], max_new_tokens=7))
    traces = lm.trace_count
    list(lm.stream(PROMPTS[1], max_new_tokens=7, chunk_size=8))
    list(lm.stream(PROMPTS[3], max_new_tokens=7, chunk_size=8))
    assert lm.trace_count == traces


@pytest.mark.slow
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


# ---- stop strings ----------------------------------------------------------------------------------


def hf_text_twin(model_dir):
    """The reference model and a transformers tokenizer over the same tokenizer.json."""
    import transformers

    hf_dir = model_dir.parent / "hf"
    hf = transformers.GPT2LMHeadModel.from_pretrained(hf_dir).eval()
    return hf, transformers.PreTrainedTokenizerFast(tokenizer_file=str(hf_dir / "tokenizer.json"))


def stop_inside_tokens(pieces: list[bytes], size: int = 4) -> str:
    """A `size`-byte UTF-8 string from the joined pieces that starts inside a piece and ends in a
    later one (so matching it needs a partial first token and more than one token), or None."""
    text, start = b"".join(pieces), 0
    for piece in pieces:
        for offset in range(1, len(piece)):
            at = start + offset
            chunk = text[at:at + size]
            if len(chunk) == size and at + size > start + len(piece):
                try:
                    return chunk.decode("utf-8")
                except UnicodeDecodeError:
                    pass
        start += len(piece)
    return None


def test_stop_strings_match_reference(text_model_dir):
    """Stop strings spanning tokens and starting inside a token stop exactly the rows HF's
    StopStringCriteria stops, at the same token (greedy, left-padded batch); contrastive search
    stops where its own output first ends with the string (transformers 5 has no contrastive search).
    A row that stops is padded after the stop, as HF does when there is an EOS id."""
    import torch

    from minigen.generation.stop_strings import token_bytes

    model_dir, lm = text_model_dir
    hf, hf_tok = hf_text_twin(model_dir)
    tok = lm.tokenizer
    ids, mask = tok.encode_batch(PROMPTS)
    width = ids.shape[1]
    for options in (dict(), dict(penalty_alpha=0.6, top_k=4)):
        # with an EOS id HF pads the rows a stop string ended (without one it lets them run on)
        eos = tok.eos_id
        plain = lm.generate(ids, mask, max_new_tokens=24, eos_token_id=eos, pad_token_id=tok.pad_id, **options)
        assert not (plain[:, width:] == eos).any()
        # 4 bytes of a row's continuation that begin inside one of its tokens and end in a later one
        row, stop = next((r, found) for r in range(len(PROMPTS)) if (found := stop_inside_tokens(
            [token_bytes(tok.backend)[t] for t in plain[r, width:width + 16]])))
        if options:  # transformers 5 has no contrastive search: plain output, cut after the token in which
            # the stop string first ends (HF's rule: the string may end inside the latest token)
            ref = plain.copy()
            for r in range(len(plain)):
                text = b"".join(token_bytes(tok.backend)[t] for t in ids[r][mask[r] == 1])  # the prompt counts
                for i, t in enumerate(plain[r, width:]):
                    piece = token_bytes(tok.backend)[t]
                    text += piece
                    if stop.encode() in text[max(0, len(text) - len(piece) - len(stop) + 1):]:
                        ref[r, width + i + 1:] = tok.pad_id
                        break
        else:
            with torch.no_grad():
                ref = hf.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=24,
                                  do_sample=False, eos_token_id=eos, pad_token_id=tok.pad_id,
                                  stop_strings=[stop, "zzz"], tokenizer=hf_tok).numpy()
            ref = np.pad(ref, ((0, 0), (0, width + 24 - ref.shape[1])), constant_values=tok.pad_id)
        ours = lm.generate(ids, mask, max_new_tokens=24, eos_token_id=eos, pad_token_id=tok.pad_id,
                           stop_strings=[stop, "zzz"], **options)
        np.testing.assert_array_equal(ours, ref, err_msg=str(options))
        assert stop in tok.decode(ours[row, width:]) and not np.array_equal(ours[row], plain[row])  # it stopped
        texts = lm.generate_text(PROMPTS, max_new_tokens=24, stop_strings=stop, **options)
        assert texts[row].count(stop) == 1 and len(texts[row]) < len(tok.decode(plain[row, width:]))
        if not options:  # streaming reads the same finished flag (its chunks: tests/test_contrastive.py)
            assert "".join(lm.stream(PROMPTS[row], max_new_tokens=24, stop_strings=stop)) == texts[row]


def test_stop_strings_errors(text_model_dir, hf_and_minigen):
    _, lm = text_model_dir
    with pytest.raises(ValueError, match="stop_strings must be a non-empty string or a list of them"):
        lm.generate_text("The", stop_strings=[""])
    with pytest.raises(ValueError, match="stop_strings work with greedy search, sampling and contrastive search"):
        lm.generate_text("The", stop_strings=["x"], num_beams=2)
    _, _, bare = hf_and_minigen("tiny")  # no tokenizer
    with pytest.raises(ValueError, match="stop_strings need the model's tokenizer"):
        bare.generate([[1, 2, 3]], stop_strings=["x"])


@pytest.mark.slow
def test_cli_stop(text_model_dir, cli):
    model_dir, lm = text_model_dir
    plain = lm.generate_text(PROMPTS[0], max_new_tokens=20)[0]
    stop = plain[3:6]
    out = cli("generate", PROMPTS[0], "--model", model_dir, "--max-new-tokens", "20", "--stop", stop, "--stop", "zzz")
    assert out.returncode == 0, out.stderr[-2000:]
    assert lm.generate_text(PROMPTS[0], max_new_tokens=20, stop_strings=[stop, "zzz"])[0] in out.stdout


@pytest.mark.slow
def test_max_time_stops_streaming_between_chunks(text_model_dir):
    """max_time is read between streamed chunks: a limit already passed after the first chunk ends
    the stream there; generate (one compiled call) refuses it rather than ignore it."""
    _, lm = text_model_dir
    ids, mask = lm.tokenizer.encode_batch(PROMPTS[:2])
    whole = list(lm.stream_tokens(ids, mask, chunk_size=4, max_new_tokens=16, eos_token_id=[]))
    cut = list(lm.stream_tokens(ids, mask, chunk_size=4, max_new_tokens=16, eos_token_id=[], max_time=1e-9))
    assert len(whole) == 4 and len(cut) == 1
    np.testing.assert_array_equal(cut[0], whole[0])
    with pytest.raises(ValueError, match="max_time is read between streamed chunks"):
        lm.generate(ids, mask, max_time=5.0)
    with pytest.raises(ValueError, match="max_time must be None or a number of seconds > 0"):
        list(lm.stream_tokens(ids, mask, max_time=0))
