"""Structured output (regex=, json_schema=, choices=): parity with transformers' generate driven by the
same outlines-core index through prefix_allowed_tokens_fn (the reference written here), validity of
every output, the constrained sampling distribution, and the refusals."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

outlines_core = pytest.importorskip("outlines_core", reason="structured output needs outlines-core (minigen[structured])")

from minigen.generation import constraints  # noqa: E402

SCHEMA = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 6},
    "age": {"type": "integer", "maxDigits": 2},
    "mood": {"type": "string", "enum": ["glad", "sad"]},
    "tags": {"type": "array", "items": {"type": "boolean"}, "maxItems": 2},
    "home": {"type": "object", "properties": {"x": {"type": "number", "maxDigitsInteger": 2, "minDigitsFraction": 1,
                                                    "maxDigitsFraction": 1, "minDigitsExponent": 1,
                                                    "maxDigitsExponent": 1}}, "required": ["x"]}},
    "required": ["name", "age", "mood", "tags", "home"]}


def hf_of(model_dir):
    import transformers

    return transformers.GPT2LMHeadModel.from_pretrained(model_dir.parent / "hf").eval()


def reference_allowed(tokenizer, regex: str, eos: int, start: int):
    """transformers' prefix_allowed_tokens_fn from outlines-core's own index of `regex` (no minigen
    code): walk the row's new tokens through its transitions; EOS where the index says final."""
    tokens = constraints.vocabulary_bytes(tokenizer)  # each id's bytes: the same vocabulary
    by_bytes = {}
    for token, b in enumerate(tokens):
        if b is not None:
            by_bytes.setdefault(b, []).append(token)
    index = outlines_core.Index(regex, outlines_core.Vocabulary(eos, by_bytes))
    transitions, first = index.get_transitions(), index.get_initial_state()

    def allowed(batch_id, input_ids):
        state = first
        for token in input_ids[start:].tolist():
            if token == eos or token not in transitions.get(state, {}):  # ended, or a beam already at -inf
                return [eos]
            state = transitions[state][token]
        return sorted(transitions.get(state, {}))

    return allowed


def padded(tokenizer, prompts):
    ids, mask = tokenizer.encode_batch(prompts)
    return np.asarray(ids), np.asarray(mask)


# Constraints whose accepting states have no way on, where outlines-core's own index is exact (it
# drops a transition out of an accepting state: the reference would differ by that, not minigen)
PARITY = [
    ("regex", r"[a-z]{2,5}-[0-9]{2}", None),
    ("choices", ["quick fox", "lazy dog", "journey", "question"], "(quick fox|lazy dog|journey|question)"),
    ("json_schema", SCHEMA, None),
]


@pytest.mark.parametrize("kind, value, regex", PARITY, ids=[p[0] for p in PARITY])
def test_greedy_matches_the_reference_with_the_same_index(text_model_dir, kind, value, regex):
    import torch

    path, model = text_model_dir
    tok = model.tokenizer
    regex = regex or (value if kind == "regex" else constraints.schema_regex(value))
    ids, mask = padded(tok, ["The quick brown", "To be", "A journey of a thousand"])
    new = 100 if kind == "json_schema" else 40  # the tiny tokenizer spells JSON in many tokens
    out = model.generate(ids, mask, max_new_tokens=new, return_dict=True, **{kind: value})
    hf = hf_of(path)
    fn = reference_allowed(tok, regex, tok.eos_id, ids.shape[1])
    with torch.no_grad():
        ref = hf.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=new, do_sample=False,
                          prefix_allowed_tokens_fn=fn, pad_token_id=tok.eos_id).numpy()
    ref = np.pad(ref, [(0, 0), (0, out.sequences.shape[1] - ref.shape[1])], constant_values=tok.eos_id)
    np.testing.assert_array_equal(out.sequences, ref)
    for row, complete in zip(out.sequences[:, ids.shape[1]:], ~out.incomplete):
        text = tok.decode([t for t in row if t != tok.eos_id])
        assert complete == (tok.eos_id in row.tolist()), text
        if complete:
            assert re.fullmatch(regex, text), text
            if kind == "json_schema":
                jsonschema = pytest.importorskip("jsonschema")
                jsonschema.validate(json.loads(text), value)
            if kind == "choices":
                assert text in value
    assert not out.incomplete.all(), "no row completed: the test would check nothing"


@pytest.mark.parametrize("kind, value, regex", PARITY, ids=[p[0] for p in PARITY])
def test_beam_search_matches_the_reference_with_the_same_index(text_model_dir, kind, value, regex):
    """One automaton state per beam, inherited from the parent beam: sequences and sequences_scores
    equal transformers' beam search with the same prefix_allowed_tokens_fn."""
    import torch

    path, model = text_model_dir
    tok = model.tokenizer
    regex = regex or (value if kind == "regex" else constraints.schema_regex(value))
    ids, mask = padded(tok, ["The quick brown", "A journey of a thousand"])
    new = 100 if kind == "json_schema" else 30
    out = model.generate(ids, mask, max_new_tokens=new, num_beams=3, num_return_sequences=2, output_scores=True,
                         **{kind: value})
    fn = reference_allowed(tok, regex, tok.eos_id, ids.shape[1])
    with torch.no_grad():
        ref = hf_of(path).generate(torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=new,
                                   num_beams=3, num_return_sequences=2, do_sample=False, prefix_allowed_tokens_fn=fn,
                                   pad_token_id=tok.eos_id, output_scores=True, return_dict_in_generate=True)
    sequences = np.pad(ref.sequences.numpy(), [(0, 0), (0, out.sequences.shape[1] - ref.sequences.shape[1])],
                       constant_values=tok.eos_id)
    np.testing.assert_array_equal(out.sequences, sequences)
    np.testing.assert_allclose(out.sequences_scores, ref.sequences_scores.numpy(), rtol=1e-4, atol=1e-4)
    for row, incomplete in zip(out.sequences[:, ids.shape[1]:], out.incomplete):
        if not incomplete:
            assert re.fullmatch(regex, tok.decode([t for t in row if t != tok.eos_id]))
    assert not out.incomplete.all()


@pytest.mark.slow
def test_contrastive_search_texts_match(text_model_dir):
    """Contrastive search under a constraint: among the top_k candidates a forbidden one (probability 0
    once masked) never wins, so every completed text matches; where fewer than top_k tokens are allowed
    the reference could pick a forbidden one, so its tokens are not the yardstick here."""
    _, model = text_model_dir
    tok = model.tokenizer
    regex = r"[a-z]{2,5}-[0-9]{2}"
    ids, mask = padded(tok, ["The quick brown", "To be", "A journey of a thousand"])
    out = model.generate(ids, mask, max_new_tokens=30, penalty_alpha=0.6, top_k=4, regex=regex, return_dict=True)
    for row, incomplete in zip(out.sequences[:, ids.shape[1]:], out.incomplete):
        assert not incomplete
        assert re.fullmatch(regex, tok.decode([t for t in row if t != tok.eos_id]))


@pytest.mark.slow
def test_speculative_decoding_accepts_only_what_the_automaton_allows(text_model_dir):
    """Prompt lookup and a draft model (the same weights, loaded again) propose unconstrained tokens; the
    verify block masks each position by the automaton state its candidates lead to, so greedy output
    equals plain greedy with the constraint, and sampled texts match."""
    import minigen

    path, model = text_model_dir
    tok = model.tokenizer
    ids, mask = padded(tok, ["The quick brown fox jumps over the lazy", "To be, or not to be"])
    regex = r"( [a-z]{1,8}){2,6}[.,]"
    plain = model.generate(ids, mask, max_new_tokens=30, regex=regex)
    lookup = model.generate(ids, mask, max_new_tokens=30, regex=regex, prompt_lookup_num_tokens=3)
    drafted = model.generate(ids, mask, max_new_tokens=30, regex=regex, assistant_model=minigen.load(path),
                             num_assistant_tokens=3)
    np.testing.assert_array_equal(lookup, plain)
    np.testing.assert_array_equal(drafted, plain)
    sampled = model.generate(ids, mask, max_new_tokens=30, regex=regex, prompt_lookup_num_tokens=3, do_sample=True,
                             seed=(5, 6), return_dict=True)
    for row, incomplete in zip(sampled.sequences[:, ids.shape[1]:], sampled.incomplete):
        if not incomplete:
            assert re.fullmatch(regex, tok.decode([t for t in row if t != tok.eos_id]))


@pytest.mark.slow
def test_engine_requests_each_with_its_own_constraint_equal_generate_alone(text_model_dir):
    """The request engine: each request its own constraint (or none) over 2 slots refilled as requests
    finish, the running set of constraints changing between chunks; each request's tokens, and whether
    it is incomplete, equal generate on its prompt alone with the same options."""
    _, model = text_model_dir
    tok = model.tokenizer
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer", "maxDigits": 2}},
              "required": ["ok", "n"]}
    requests = [
        {"prompt": "The quick brown", "max_new_tokens": 20, "regex": r"[a-z]{2,5}-[0-9]{2}"},
        {"prompt": "To be", "max_new_tokens": 12, "choices": ["north", "north-east", "south"]},
        {"prompt": "A journey of a thousand", "max_new_tokens": 40, "json_schema": schema},
        {"prompt": "All that", "max_new_tokens": 10},
        {"prompt": "The quick", "max_new_tokens": 20, "regex": r"( [a-z]{1,6}){2,4}\.", "do_sample": True,
         "seed": [1, 2], "top_k": 0},
        {"prompt": "To be", "max_new_tokens": 3, "regex": "[a-z]{20}"},
        {"prompt": "All that glitters", "max_new_tokens": 12, "choices": ["north", "north-east", "south"],
         "repetition_penalty": 1.5},
    ]
    results = model.generate_many(requests, slots=2)
    assert sum(r.incomplete is None for r in results) == 1 and results[5].incomplete
    for request, result in zip(requests, results):
        ids, mask = padded(tok, [request["prompt"]])
        options = {k: v for k, v in request.items() if k != "prompt"}
        alone = model.generate(ids, mask, return_dict=True, **options)
        row = alone.sequences[0, ids.shape[1]:].tolist()
        expected = row[:row.index(tok.eos_id) + 1] if tok.eos_id in row else row
        assert result.new_tokens == expected, (request, result)
        if alone.incomplete is not None:
            assert result.incomplete == bool(alone.incomplete[0])
            if not result.incomplete:
                assert result.finish_reason == "eos"


# make soak: more constraints, greedy against the reference's prefix_allowed_tokens_fn (none with an accepting
# state that goes on, where outlines-core's own index is not the yardstick: see PARITY)
SOAK = [
    ("regex", r"[0-9]{4}-[0-9]{2}-[0-9]{2}", None),
    ("regex", r"(yes|no|maybe)[.!]", None),
    ("regex", r"[A-Z][a-z]{1,8}( [A-Z][a-z]{1,8}){0,2}\.", None),
    ("choices", ["a", "bb", "ccc", "the quick"], "(a|bb|ccc|the quick)"),
    ("json_schema", {"type": "array", "items": {"enum": ["x", "yy", "zzz"]}, "minItems": 2, "maxItems": 4}, None),
    ("json_schema", {"type": "object", "properties": {"id": {"type": "string", "format": "uuid"}}, "required": ["id"]},
     None),
    ("json_schema", {"anyOf": [{"type": "boolean"}, {"type": "null"}]}, None),
]


@pytest.mark.slow
@pytest.mark.parametrize("kind, value, regex", SOAK, ids=[f"{p[0]}-{i}" for i, p in enumerate(SOAK)])
def test_more_constraints_match_the_reference(text_model_dir, kind, value, regex):
    test_greedy_matches_the_reference_with_the_same_index(text_model_dir, kind, value, regex)


@pytest.mark.slow
def test_every_sampled_text_matches_and_accepting_states_go_on(text_model_dir):
    """Sampling under a regex whose accepting states continue ("12" and "12.5" both match): outlines-
    core's own index would never let a row past "12"; every completed text must fullmatch."""
    _, model = text_model_dir
    tok = model.tokenizer
    regex = r"[0-9]{1,3}(\.[0-9]{1,2})?( ?(kg|g))?"
    ids, mask = padded(tok, ["All that glitters"] * 24)
    out = model.generate(ids, mask, max_new_tokens=12, do_sample=True, temperature=2.0, seed=(3, 4), regex=regex,
                         return_dict=True)
    texts = [tok.decode([t for t in row if t != tok.eos_id]) for row in out.sequences[:, ids.shape[1]:]]
    for text, incomplete in zip(texts, out.incomplete):
        if not incomplete:
            assert re.fullmatch(regex, text), text
    completed = [t for t, bad in zip(texts, out.incomplete) if not bad]
    assert len(completed) >= 12 and any("." in t for t in completed), texts


def test_choices_that_prefix_each_other_are_all_reachable(text_model_dir):
    _, model = text_model_dir
    tok = model.tokenizer
    auto = constraints.automaton(tok, "choices", ["north", "north-east"])
    for text in ("north", "north-east"):
        assert constraints.walk(auto, tok.encode(text) + [tok.eos_id], (tok.eos_id,)), text
    assert not constraints.walk(auto, tok.encode("north-") + [tok.eos_id], (tok.eos_id,))
    # every choice comes out when it is the only one allowed past the shared start
    ids, mask = padded(tok, ["To be"])
    out = model.generate(ids, mask, max_new_tokens=12, choices=["north-east"])
    assert tok.decode([t for t in out[0, ids.shape[1]:] if t != tok.eos_id]) == "north-east"


@pytest.mark.slow
def test_constrained_draws_follow_the_masked_softmax(text_model_dir):
    """One step, many seeds: the first token's draws against softmax(logits) renormalised over the
    allowed set (chi-square), and nothing outside it."""
    _, model = text_model_dir
    tok = model.tokenizer
    choices = ["a", "b", "c", "d", "e"]
    ids, mask = padded(tok, ["To be"] * 50)
    logits = model.logits(ids[:1], mask[:1])[0, -1].astype(np.float64)
    firsts = [tok.encode(c)[0] for c in choices]
    p = np.exp(logits[firsts] - logits[firsts].max())
    p /= p.sum()
    counts = np.zeros(len(choices))
    for seed in range(8):  # 8 calls of 50 rows (each row its own draw): one compile, 400 draws
        out = model.generate(ids, mask, max_new_tokens=1, do_sample=True, top_k=0, choices=choices,
                             seed=(seed, 7), return_dict=True)
        for token in out.sequences[:, ids.shape[1]]:
            assert token in firsts
            counts[firsts.index(token)] += 1
    expected = p * counts.sum()
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 18.5, (counts, expected)  # 4 degrees of freedom: p = 0.001


@pytest.mark.slow
def test_streaming_gives_generate_tokens_and_new_constraints_reuse_the_compile(text_model_dir):
    _, model = text_model_dir
    tok = model.tokenizer
    ids, mask = padded(tok, ["The quick brown", "To be"])
    whole = model.generate(ids, mask, max_new_tokens=16, regex="[a-z ]{3,12}")
    pieces = np.concatenate(list(model.stream_tokens(ids, mask, max_new_tokens=16, chunk_size=5,
                                                     regex="[a-z ]{3,12}")), axis=1)
    np.testing.assert_array_equal(whole[:, ids.shape[1]:ids.shape[1] + pieces.shape[1]], pieces)
    traces = model.trace_count
    model.generate(ids, mask, max_new_tokens=16, regex="[0-9 ]{3,12}")  # same buckets: no new compile
    assert model.trace_count == traces


def test_incomplete_output_is_never_silent(text_model_dir):
    _, model = text_model_dir
    ids, mask = padded(model.tokenizer, ["To be"])
    with pytest.warns(UserWarning, match="did not complete their regex"):
        model.generate(ids, mask, max_new_tokens=2, regex="[a-z]{20}")
    out = model.generate(ids, mask, max_new_tokens=2, regex="[a-z]{20}", return_dict=True)
    assert out.incomplete.tolist() == [True]


@pytest.mark.parametrize("options, message", [
    (dict(regex="(unclosed"), "regex cannot be compiled"),
    (dict(regex=""), "regex must be a non-empty regex"),
    (dict(choices=[]), "choices must be a non-empty list"),
    (dict(choices=["ok", ""]), "choices must be a non-empty list"),
    (dict(json_schema="{not json"), "json_schema must be a JSON schema"),
    (dict(json_schema={"type": "integer", "minimum": 3}), "'minimum'"),
    (dict(json_schema={"type": "object", "properties": {"n": {"type": "number", "maxDigitsFraction": 2}}}),
     "maxDigitsFraction"),
    (dict(regex="a", choices=["a"]), "give one of regex, json_schema and choices"),
    (dict(choices=["a"] * 5000), "choices: at most 4096"),
    (dict(choices=["a"], return_state=True), "choices \\(structured output\\) does not combine with "
                                             "cache/return_state"),
])
def test_bad_constraints_are_named(text_model_dir, options, message):
    _, model = text_model_dir
    ids, mask = padded(model.tokenizer, ["To be"])
    with pytest.raises(ValueError, match=message):
        model.generate(ids, mask, max_new_tokens=4, **options)


def test_a_constraint_no_token_sequence_can_match_is_refused():
    # outlines-core itself refuses most such regexes; minigen's own check catches the rest
    with pytest.raises(ValueError, match="regex (: no sequence of this tokenizer's tokens can match it|cannot be "
                                         "compiled by outlines-core: The vocabulary provided is incompatible)"):
        constraints.build("c[ab]", (b"a", b"b", None))
    with pytest.raises(ValueError, match="json_schema cannot be compiled to a regex by outlines-core"):
        constraints.schema_regex({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}})


@pytest.mark.slow
def test_the_command_takes_each_kind(text_model_dir, cli, tmp_path):
    """--regex, --json-schema (a file or JSON text) and --choice (repeated) give the API's text; with
    --input the prompts run on the request engine, each its own request, and the texts are the same."""
    path, model = text_model_dir
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    (tmp_path / "schema.json").write_text(json.dumps(schema))
    cases = [(["--regex", "[a-z]{2,5}-[0-9]{2}"], dict(regex="[a-z]{2,5}-[0-9]{2}")),
             (["--json-schema", tmp_path / "schema.json"], dict(json_schema=schema)),
             (["--json-schema", json.dumps(schema)], dict(json_schema=schema)),
             (["--choice", "north", "--choice", "north-east"], dict(choices=["north", "north-east"]))]
    for flags, options in cases:
        out = cli("generate", "To be", "--model", path, "--max-new-tokens", "24", *flags)
        assert out.returncode == 0, out.stderr[-2000:]
        assert model.generate_text("To be", max_new_tokens=24, **options)[0] in out.stdout
    (tmp_path / "prompts.txt").write_text("To be\nThe quick brown\n")
    out = cli("generate", "--model", path, "--input", tmp_path / "prompts.txt", "--format", "jsonl",
              "--max-new-tokens", "24", "--regex", "[a-z]{2,5}-[0-9]{2}")
    assert out.returncode == 0, out.stderr[-2000:]
    texts = [json.loads(line)["text"] for line in out.stdout.splitlines() if line.strip()]
    assert texts == [model.generate_text(p, max_new_tokens=24, regex="[a-z]{2,5}-[0-9]{2}")[0]
                     for p in ("To be", "The quick brown")]
    bad = cli("generate", "To be", "--model", path, "--regex", "(open")
    assert bad.returncode in (1, 2) and "regex cannot be compiled by outlines-core" in bad.stderr, bad.stderr


def test_a_model_without_a_tokenizer_is_refused(hf_and_minigen):
    _, _, model = hf_and_minigen("tiny")
    with pytest.raises(ValueError, match="regex \\(structured output\\) needs the model's tokenizer"):
        model.generate([[1, 2]], max_new_tokens=4, regex="[a-z]+")


def test_gpt2_vocabulary_tables_are_compact():
    """Over the real GPT-2 vocabulary: token classes keep the tables small, `\\d` stays ASCII in a
    schema's regex, and a constraint too large is refused with its size."""
    from conftest import SHARED_DATA

    path = SHARED_DATA / "gpt2-tokenizer"
    if not (path / "tokenizer.json").exists():
        pytest.skip(f"the GPT-2 tokenizer is not at {path} (../shared/data)")
    import minigen

    tok = minigen.Tokenizer.from_dir(path)
    auto = constraints.automaton(tok, "json_schema", SCHEMA)
    tables = constraints.tables(auto, (tok.eos_id,), 50257)
    assert auto.next_state.shape[1] < 400 and tables.allowed.nbytes < 4 * 2**20, tables.shape_key
    assert constraints.walk(auto, tok.encode('{"name": "ab", "age": 31, "mood": "sad", "tags": [true], '
                                             '"home": {"x": 10.5}}') + [tok.eos_id], (tok.eos_id,))
    with pytest.raises(ValueError, match="MiB"):
        constraints.tables(auto._replace(allowed=np.zeros([40000, 1571], np.int32)), (tok.eos_id,), 50257)
