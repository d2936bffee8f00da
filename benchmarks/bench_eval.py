"""lm-evaluation-harness wall time: `--model minigen` vs the harness's `--model hf` (PyTorch, CPU) on the
same random GPT-2 weights, one local task per request type, in one process, run alone.

    python benchmarks/bench_eval.py            # GPT-2 small shape; writes benchmarks/results/eval.md
    python benchmarks/bench_eval.py --quick    # tiny model, few requests: checks the script works

The tasks are built here from the public-domain novels of ../shared/data (the real GPT-2 tokenizer
from ../shared/data/gpt2-tokenizer): multiple choice (a passage's next words among 4), loglikelihood
(a passage's next words), loglikelihood_rolling (passages of 200-1500 words) and generate_until
(24 tokens, until a period or newline). Each backend runs each task once after a warm-up task
(minigen's first compiles; the hf backend's first call), and the figure is requests per second.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["HF_DATASETS_OFFLINE"] = os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"
SHAPES = {"small": dict(n_layer=12, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024),
          "quick": dict(n_layer=2, n_embd=128, n_head=4, vocab_size=50257, n_positions=256)}
TASKS = {
    "choice": dict(output_type="multiple_choice", doc_to_text="{{context}}", doc_to_choice="{{choices}}",
                   doc_to_target="{{answer}}", metric_list=[dict(metric="acc")]),
    "loglik": dict(output_type="loglikelihood", doc_to_text="{{context}}", doc_to_target="{{target}}",
                   metric_list=[dict(metric="acc")]),
    "rolling": dict(output_type="loglikelihood_rolling", doc_to_text="", doc_to_target="{{text}}",
                    metric_list=[dict(metric="word_perplexity")]),
    "generate": dict(output_type="generate_until", doc_to_text="{{context}}", doc_to_target="{{target}}",
                     generation_kwargs=dict(until=["\n", "."], max_gen_toks=24, do_sample=False),
                     metric_list=[dict(metric="exact_match")]),
}


def machine_name() -> str:
    flags = open("/proc/cpuinfo").read()
    cpu = "Xeon with AMX" if "amx_int8" in flags else "AMD EPYC" if "AuthenticAMD" in flags else platform.processor()
    return f"{cpu}, {os.cpu_count()} cores"


def documents(n: int, rng) -> list[dict]:
    words = []
    for book in sorted((DATA / "corpora" / "gutenberg-classics").glob("*.txt")):
        words += book.read_text(encoding="utf-8").split()
    docs = []
    for _ in range(n):
        at = int(rng.integers(0, len(words) - 3000))
        context = " ".join(words[at:at + int(rng.integers(20, 200))])
        following = [" " + " ".join(words[at + k * 977:at + k * 977 + int(rng.integers(1, 6))]) for k in range(1, 4)]
        nxt = at + len(context.split())
        target = " " + " ".join(words[nxt:nxt + int(rng.integers(1, 6))])
        docs.append(dict(context=context, choices=[target] + following, answer=0, target=target,
                         text=" ".join(words[at:at + int(rng.integers(200, 1500))])))
    return docs


def write_tasks(root: Path, n: int) -> None:
    docs = documents(n, np.random.default_rng(0))
    (root / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    for name, spec in {**TASKS, "warmup": TASKS["choice"]}.items():
        data = root / ("warm.jsonl" if name == "warmup" else "docs.jsonl")
        task = dict(task=f"bench_{name}", dataset_path="json", test_split="test",
                    dataset_kwargs=dict(data_files=dict(test=str(data))), **spec)
        (root / f"bench_{name}.yaml").write_text(json.dumps(task))
    (root / "warm.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs[:4]))


def write_checkpoint(hf_dir: Path, shape: dict) -> None:
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.GPT2Config(**shape, bos_token_id=50256, eos_token_id=50256)
    transformers.GPT2LMHeadModel(config).save_pretrained(hf_dir)
    for name in ("tokenizer.json", "vocab.json", "merges.txt"):
        shutil.copy(DATA / "gpt2-tokenizer" / name, hf_dir / name)
    (hf_dir / "tokenizer_config.json").write_text(json.dumps(dict(
        tokenizer_class="GPT2Tokenizer", eos_token="<|endoftext|>", bos_token="<|endoftext|>",
        unk_token="<|endoftext|>", model_max_length=shape["n_positions"])))


def run(model: str, model_args: str, task: str, root: Path, batch_size: int) -> tuple[float, int]:
    """(seconds, requests) of one task through the harness."""
    import minigen.lm_eval  # noqa: F401 - registers --model minigen
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    began = time.perf_counter()
    out = simple_evaluate(model=model, model_args=model_args, tasks=[f"bench_{task}"], batch_size=batch_size,
                          device="cpu", task_manager=TaskManager(include_path=str(root)), log_samples=True)
    took = time.perf_counter() - began
    return took, sum(len(s["arguments"]) for s in out["samples"][f"bench_{task}"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--docs", type=int, default=None, help="documents per task (default 100, quick 8)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--tasks", default=",".join(TASKS),
                        help=f"comma-separated, of {', '.join(TASKS)} (a subset is written to eval-subset.md)")
    args = parser.parse_args()
    tasks = args.tasks.split(",")
    if not set(tasks) <= set(TASKS):
        raise SystemExit(f"--tasks: unknown {', '.join(sorted(set(tasks) - set(TASKS)))}; choose from {', '.join(TASKS)}")
    if not (DATA / "gpt2-tokenizer" / "tokenizer.json").exists():
        raise SystemExit(f"needs the GPT-2 tokenizer and the novels of {DATA} (see its SOURCE.md files)")
    shape = SHAPES["quick" if args.quick else "small"]
    n = args.docs or (8 if args.quick else 100)
    work = Path(tempfile.mkdtemp(prefix="minigen-bench-eval-"))
    write_tasks(work, n)
    write_checkpoint(work / "hf", shape)
    from weights_tools.convert import convert

    convert(str(work / "hf"), str(work / "minigen"), quiet=True)
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    backends = {"minigen": f"pretrained={work / 'minigen'}", "hf": f"pretrained={work / 'hf'},dtype=float32"}
    rows = {}
    for name, model_args in backends.items():
        run(name, model_args, "warmup", work, args.batch_size)
        for task in tasks:
            took, requests = run(name, model_args, task, work, args.batch_size)
            rows[(name, task)] = (took, requests)
            print(f"{name:8s} {task:9s} {requests:5d} requests in {took:7.1f} s = {requests / took:7.2f} req/s", flush=True)
    lines = [f"Machine: {machine_name()}. GPT-2 {shape['n_layer']} layers x {shape['n_embd']} (random weights, "
             f"float32), the real GPT-2 tokenizer, {n} documents per task from the novels of ../shared/data, "
             f"batch size {args.batch_size}, each task once after a warm-up task. Command: "
             f"`python benchmarks/bench_eval.py{' --quick' if args.quick else ''}"
             f"{f' --docs {args.docs}' if args.docs else ''}{f' --tasks {args.tasks}' if tasks != list(TASKS) else ''}`.",
             "",
             "| request type (task) | requests | minigen (s) | hf backend (s) | minigen req/s | hf req/s | speed-up |",
             "|---|---|---|---|---|---|---|"]
    for task in tasks:
        (ours, count), (theirs, _) = rows[("minigen", task)], rows[("hf", task)]
        lines.append(f"| {TASKS[task]['output_type']} | {count} | {ours:.1f} | {theirs:.1f} | {count / ours:.2f} | "
                     f"{count / theirs:.2f} | {theirs / ours:.2f}x |")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    target = Path(args.out) / ("eval-quick.md" if args.quick else "eval.md" if tasks == list(TASKS) else "eval-subset.md")
    target.write_text("\n".join(lines) + "\n")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
