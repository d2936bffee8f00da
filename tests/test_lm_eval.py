"""lm-evaluation-harness end to end: local tasks of each output type (multiple_choice, loglikelihood,
loglikelihood_rolling, generate_until) run through the harness with `--model minigen` on a converted
checkpoint and with the harness's own `hf` backend on the original, in the same test: per-sample
log-likelihoods within 1e-4 per token, the same is_greedy flags, identical generations, equal metrics."""

from __future__ import annotations

import json
import shutil

import pytest

lm_eval = pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install -e '.[test]')")

TASKS = {
    "mg_choice": dict(output_type="multiple_choice", doc_to_text="{{question}}", doc_to_choice="{{choices}}",
                      doc_to_target="{{answer}}", metric_list=[dict(metric="acc")]),
    "mg_loglik": dict(output_type="loglikelihood", doc_to_text="{{question}}", doc_to_target="{{target}}",
                      metric_list=[dict(metric="acc")]),
    "mg_rolling": dict(output_type="loglikelihood_rolling", doc_to_text="", doc_to_target="{{text}}",
                       metric_list=[dict(metric="word_perplexity"), dict(metric="bits_per_byte")]),
    "mg_generate": dict(output_type="generate_until", doc_to_text="{{question}}", doc_to_target="{{target}}",
                        generation_kwargs=dict(until=["\n", "."], max_gen_toks=12, do_sample=False),
                        metric_list=[dict(metric="exact_match")]),
}
WORDS = "the cat sat on a mat and the dog ran to the old house by the sea where it was dark".split()


def documents(rng) -> list[dict]:
    docs = []
    for i in range(8):
        words = rng.choice(WORDS, size=rng.integers(2, 14)).tolist()
        choices = [" " + " ".join(rng.choice(WORDS, size=rng.integers(1, 4)).tolist()) for _ in range(3)]
        docs.append(dict(question=" ".join(words) + ("" if i % 3 else " "), choices=choices, answer=int(i % 3),
                         target=choices[0], text=" ".join(rng.choice(WORDS, size=rng.integers(5, 200)).tolist())))
    docs.append(dict(question="", choices=[" the", " a", " sea"], answer=2, target=" cat", text="the"))  # empty context
    return docs


@pytest.fixture(scope="module")
def harness_tasks(tmp_path_factory, text_model_dir):
    import os

    import numpy as np

    # the tasks and models are local: never let the harness or datasets reach for the hub
    os.environ["HF_DATASETS_OFFLINE"] = os.environ["HF_HUB_OFFLINE"] = "1"
    root = tmp_path_factory.mktemp("eval")
    docs = documents(np.random.default_rng(50))
    (root / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    # the hf backend cannot generate from an empty context (it reshapes 0 tokens): that one only scores
    (root / "prompts.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs if d["question"]))
    for name, spec in TASKS.items():
        data = root / ("prompts.jsonl" if name == "mg_generate" else "docs.jsonl")
        task = dict(task=name, dataset_path="json", dataset_kwargs=dict(data_files=dict(test=str(data))),
                    test_split="test", **spec)
        (root / f"{name}.yaml").write_text(json.dumps(task))
    path, _ = text_model_dir
    hf_dir = root / "hf"
    shutil.copytree(path.parent / "hf", hf_dir)
    (hf_dir / "tokenizer_config.json").write_text(json.dumps(dict(
        tokenizer_class="PreTrainedTokenizerFast", eos_token="<|endoftext|>", bos_token="<|endoftext|>",
        unk_token="<|endoftext|>", model_max_length=128)))
    return root, path, hf_dir


def evaluate(model: str, model_args: str, root):
    import minigen.lm_eval  # noqa: F401 - registers --model minigen
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    return simple_evaluate(model=model, model_args=model_args, tasks=list(TASKS), batch_size=4, device="cpu",
                           task_manager=TaskManager(include_path=str(root)), log_samples=True)


def test_every_request_type_equals_the_hf_backend(harness_tasks):
    root, minigen_dir, hf_dir = harness_tasks
    ours = evaluate("minigen", f"pretrained={minigen_dir}", root)
    theirs = evaluate("hf", f"pretrained={hf_dir},dtype=float32", root)
    for task in TASKS:
        mine, ref = ours["samples"][task], theirs["samples"][task]
        assert len(mine) == len(ref) == (8 if task == "mg_generate" else 9)
        for a, b in zip(mine, ref):
            assert a["arguments"] == b["arguments"], task  # the same requests
            for x, y in zip(a["resps"], b["resps"]):
                x, y = x[0], y[0]
                if task == "mg_generate":
                    assert x == y, (a["arguments"], x, y)
                elif task == "mg_rolling":
                    assert abs(x - y) <= 1e-4 * 200, (x, y)
                else:
                    assert abs(x[0] - y[0]) <= 1e-4 * 8 and x[1] == y[1], (task, x, y)
        for metric, value in theirs["results"][task].items():
            if isinstance(value, float) and "stderr" not in metric:
                assert ours["results"][task][metric] == pytest.approx(value, rel=1e-4, abs=1e-6), (task, metric)


    generated = [r["resps"][0][0] for r in ours["samples"]["mg_generate"]]
    assert sum(bool(g.strip()) for g in generated) >= 4, generated  # real text, not empty strings
    assert len({r["resps"][0][0][0] for r in ours["samples"]["mg_loglik"]}) > 4


def test_unknown_model_args_are_named(harness_tasks):
    from minigen.lm_eval import MinigenLM

    _, minigen_dir, _ = harness_tasks
    with pytest.raises(ValueError, match="unknown --model_args key.s. for minigen: trust_me"):
        MinigenLM(pretrained=str(minigen_dir), trust_me=True)


@pytest.mark.slow
def test_the_command_runs_the_harness_with_minigen_registered(harness_tasks, tmp_path, monkeypatch, capsys):
    """`python -m minigen.lm_eval run ...` (the README's command) on one local task: its main(), in
    this process (a subprocess would import TensorFlow and the harness once more)."""
    from minigen.lm_eval import main

    root, minigen_dir, _ = harness_tasks
    out = tmp_path / "results"
    monkeypatch.setattr("sys.argv", ["python -m minigen.lm_eval"])  # main() sets it for the harness
    assert main(["run", "--model", "minigen", "--model_args", f"pretrained={minigen_dir}", "--tasks", "mg_choice",
                 "--include_path", str(root), "--limit", "3", "--output_path", str(out)]) == 0
    results = json.loads(next(out.rglob("results*.json")).read_text())
    assert results["config"]["model"] == "minigen" and "acc,none" in results["results"]["mg_choice"]
    assert main([]) == 2 and "python -m minigen.lm_eval run --model minigen" in capsys.readouterr().err
