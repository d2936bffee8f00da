"""Input that would give silently wrong output is refused before anything compiles, with a
ValueError naming the option or input: generate, generate_text, the tokenizer, the compile cache."""

from __future__ import annotations

import numpy as np
import pytest

import minigen


@pytest.fixture(scope="module")
def shipped():
    return minigen.load()


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(top_k=2**31), r"top_k must be an integer >= 0 \(at most 2\*\*31 - 1\)"),
        (dict(min_new_tokens=2**40), "min_new_tokens must be an integer >= 0"),
        (dict(num_beams=2, length_penalty=float("nan")), "length_penalty must be a finite number"),
        (dict(do_sample=True, temperature=float("inf")), "temperature must be a finite number > 0"),
        (dict(repetition_penalty=float("inf")), "repetition_penalty must be a finite number"),
        (dict(pad_to_multiple_of=100_000), r"pad_to_multiple_of must be at most the model's n_positions \(128\)"),
        (dict(generation_config=dict(max_new_tokens=0)), "max_new_tokens must be an integer >= 1"),
        (dict(generation_config=[("max_new_tokens", 2)]), "generation_config must be a GenerationConfig or a dict"),
    ],
    ids=["top_k-int32", "min_new_tokens-int32", "length_penalty-nan", "temperature-inf", "repetition-inf",
         "pad_to_multiple_of", "config-dict-checked", "config-list"],
)
def test_bad_options_are_named(hf_and_minigen, options, message):
    _, _, model = hf_and_minigen("tiny")
    traces = model.trace_count
    with pytest.raises(ValueError, match=message):
        model.generate([[1, 2, 3]], **options)
    assert model.trace_count == traces


def test_generation_config_dict_is_accepted_and_options_override_it(hf_and_minigen):
    from minigen.generation import GenerationConfig

    _, _, model = hf_and_minigen("tiny")
    plain = model.generate([[5, 6, 7]], max_new_tokens=3)
    np.testing.assert_array_equal(model.generate([[5, 6, 7]], generation_config=dict(max_new_tokens=3)), plain)
    np.testing.assert_array_equal(
        model.generate([[5, 6, 7]], generation_config=GenerationConfig(max_new_tokens=9), max_new_tokens=3), plain)


@pytest.mark.parametrize("mask", [[[1, 1, 0, 0]], [[0, 1, 0, 1]]], ids=["right-padded", "holes"])
def test_padding_after_a_token_is_refused(hf_and_minigen, mask):
    _, _, model = hf_and_minigen("tiny")
    with pytest.raises(ValueError, match=r"row\(s\) \[0\] have padding after a token.*pad on the left"):
        model.generate([[5, 6, 7, 8]], mask, max_new_tokens=2)
    with pytest.raises(ValueError, match="pad on the left"):
        next(model.stream_tokens([[5, 6, 7, 8]], mask, max_new_tokens=2))
    # logits take padding on either side (positions come from the mask)
    assert model.logits([[5, 6, 7, 8]], mask).shape == (1, 4, 512)


def test_prompt_ids_come_back_exactly_as_given(hf_and_minigen):
    _, _, model = hf_and_minigen("tiny")
    ids = np.array([[77, 77, 5, 6], [1, 2, 3, 4]])
    mask = np.array([[0, 0, 1, 1], [1, 1, 1, 1]])
    for options in (dict(), dict(num_beams=2, num_return_sequences=2)):
        out = model.generate(ids, mask, max_new_tokens=2, **options)
        np.testing.assert_array_equal(out[:, :4], np.repeat(ids, len(out) // 2, axis=0))


def test_a_state_continues_only_with_its_own_model(hf_and_minigen):
    _, _, tiny = hf_and_minigen("tiny")
    _, _, odd = hf_and_minigen("odd")
    state = tiny.generate([[5, 6]], max_new_tokens=2, return_state=True).state
    for other in (odd, minigen.load(tiny_dir(hf_and_minigen))):  # other weights or layers; same weights reloaded
        with pytest.raises(ValueError, match="state of another model"):
            other.generate([[4]], cache=state, max_new_tokens=2)
    assert tiny.generate([[4]], cache=state, max_new_tokens=2).shape == (1, 3)


def tiny_dir(hf_and_minigen):
    _, hf_dir, _ = hf_and_minigen("tiny")
    return hf_dir.parent / "minigen"


@pytest.mark.parametrize(
    "prompts, message",
    [
        ({"prompt": "Hello"}, "prompts must be a string or a list of strings, got dict"),
        (b"Hello", "prompts must be text .str., got bytes"),
        (None, "got NoneType"),
        (["fine", 3], r"prompts\[1\] must be a string, got int"),
        (["fine", "a \ud800 b"], r"prompts\[1\] holds a lone surrogate '\\ud800' at index 2"),
    ],
    ids=["dict", "bytes", "None", "int-in-list", "lone-surrogate"],
)
def test_bad_prompts_are_named(shipped, prompts, message):
    with pytest.raises(ValueError, match=message):
        shipped.generate_text(prompts, max_new_tokens=2)


def test_tokenizer_refuses_bad_arguments(shipped):
    tok = shipped.tokenizer
    with pytest.raises(minigen.TokenizerError, match="pad_to_multiple_of must be an int >= 1 or None, got -3"):
        tok.encode_batch(["a"], pad_to_multiple_of=-3)
    with pytest.raises(minigen.TokenizerError, match=r"token id -1 is outside the vocabulary \[0, 8192\)"):
        tok.decode([5, -1])
    with pytest.raises(minigen.TokenizerError, match="lone surrogate"):
        tok.encode("\udfff")


@pytest.mark.slow
def test_compile_cache_is_bounded_and_clearable(hf_and_minigen):
    _, _, model = hf_and_minigen("tiny")
    cache = model.compile_cache
    size = cache.maxsize
    try:
        cache.maxsize = 3
        assert len(cache) <= 3
        for n in range(1, 6):  # five distinct max_new_tokens: five keys
            model.generate([[1, 2]], max_new_tokens=n)
        assert len(cache) == 3
        traces = model.trace_count
        model.generate([[1, 2]], max_new_tokens=5)  # recently used: still compiled
        assert model.trace_count == traces
        model.generate([[1, 2]], max_new_tokens=1)  # evicted: compiled again
        assert model.trace_count == traces + 1
        cache.clear()
        assert len(cache) == 0
        with pytest.raises(ValueError, match="compile_cache_size must be an int >= 1"):
            cache.maxsize = 0
    finally:
        cache.maxsize = size
    with pytest.raises(minigen.LoadError, match="compile_cache_size must be an int >= 1"):
        minigen.load(tiny_dir(hf_and_minigen), compile_cache_size=0)
