"""Side-by-side decoding speed: minigen vs transformers (PyTorch) vs CTranslate2, one process.

    python benchmarks/bench_generate.py            # GPT-2 small shape, the figures in README.md and docs/speed.md
    python benchmarks/bench_generate.py --quick    # tiny model, 2 runs: checks the script works
    python benchmarks/bench_generate.py --speculative   # prompt lookup and the shipped draft/target pair

All systems run the same random GPT-2 weights (saved once in the Hugging Face format, then
converted for minigen and CTranslate2). Every row forces the full length (no EOS stop), so each
system does the same work. Runs alternate between systems (A B C A B C ...) so drift in the
machine's speed hits all of them alike; the figure is the median of --runs timed runs after one
warm-up call, whose time is reported as "first call" (minigen: XLA compile + one run).

Also measured: the machine's memory read bandwidth (an XLA reduction over 1 GiB) and the batch-1
ceiling it implies for a model that reads all its weights once per token (the roofline).

Writes benchmarks/results/gpt2-small.md (table) and .png (chart; needs matplotlib, `pip install
-e .[bench]`).

--speculative measures speculative decoding instead (benchmarks/results/speculative.md): the shipped
target alone, with prompt lookup and with the shipped draft, beside transformers' greedy, prompt lookup
and assisted generation (PyTorch, batch 1) on the same weights, on two tasks built from the held-out
novel of ../shared/data: repeating a passage (input-grounded) and continuing novel openings.
Every system's tokens are checked equal to minigen's plain greedy output.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHAPES = {
    "small": dict(n_layer=12, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024),
    "quick": dict(n_layer=2, n_embd=128, n_head=4, vocab_size=1000, n_positions=256),
}
EOS = None  # set from the config: the last vocabulary id, never allowed to stop a row


# ---- workloads --------------------------------------------------------------------------------


def workloads(vocab: int, prompt_len: int, new: int):
    """(name, prompts as lists of ids, options). Batch 8 has mixed prompt lengths."""
    rng = np.random.default_rng(0)
    one = [rng.integers(0, vocab - 1, prompt_len).tolist()]
    lengths = np.linspace(prompt_len // 4, prompt_len, 8).astype(int)
    eight = [rng.integers(0, vocab - 1, n).tolist() for n in lengths]
    return [
        ("b1 greedy", one, dict()),
        ("b1 top-p 0.9 T 0.8", one, dict(do_sample=True, top_p=0.9, temperature=0.8)),
        ("b1 beam-4", one, dict(num_beams=4)),
        ("b8 greedy mixed lengths", eight, dict()),
        ("b1 contrastive k4 a0.6", one, dict(penalty_alpha=0.6, top_k=4)),
    ]


def runs_workload(system: str, options: dict) -> bool:
    """Contrastive search: only minigen and transformers 4.55 (5.x moved it to a hub repository
    that cannot be reached here; CTranslate2 has none)."""
    return "penalty_alpha" not in options or system == "minigen"


# ---- systems: each returns a callable run(prompts, options) -> list of generated lengths --------


def left_pad(prompts, pad):
    width = max(len(p) for p in prompts)
    ids = np.full((len(prompts), width), pad, np.int32)
    mask = np.zeros((len(prompts), width), np.int32)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = p
        mask[i, width - len(p):] = 1
    return ids, mask


def minigen_system(model_dir, new, dtype="float32"):
    import minigen

    model = minigen.load(model_dir, dtype=dtype)

    def run(prompts, options, new=new):
        ids, mask = left_pad(prompts, 0)
        out = model.generate(ids, mask, max_new_tokens=new, eos_token_id=[], pad_token_id=0,
                             seed=(1, 2) if options.get("do_sample") else None, **{"top_k": 0, **options})
        run.last = out[:, ids.shape[1]:]
        return [out.shape[1] - ids.shape[1]] * len(prompts)

    run.model = model
    return run


def transformers_system(hf_dir, new):
    import torch
    import transformers

    torch.set_num_threads(os.cpu_count() or 1)
    model = transformers.GPT2LMHeadModel.from_pretrained(hf_dir).eval()

    def run(prompts, options):
        ids, mask = left_pad(prompts, 0)
        torch.manual_seed(0)
        with torch.inference_mode():
            out = model.generate(torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask),
                                 max_new_tokens=new, min_new_tokens=new, pad_token_id=0, top_k=0, **options)
        return [out.shape[1] - ids.shape[1]] * len(prompts)

    return run


def ctranslate2_system(hf_dir, new, work, compute_type="float32"):
    """CTranslate2 on the float32 conversion; compute_type "int8" quantizes the weights when loading."""
    import ctranslate2
    from ctranslate2.converters import TransformersConverter

    out_dir = Path(work) / "ct2"
    if not out_dir.exists():
        TransformersConverter(str(hf_dir)).convert(str(out_dir), quantization="float32")
    generator = ctranslate2.Generator(str(out_dir), device="cpu", compute_type=compute_type,
                                      intra_threads=os.cpu_count() or 1)

    def run(prompts, options, new=new):
        tokens = [[f"t{i}" for i in p] for p in prompts]
        kwargs = dict(max_length=new, min_length=new, include_prompt_in_result=False)
        if options.get("do_sample"):
            kwargs.update(sampling_topk=0, sampling_topp=options["top_p"], sampling_temperature=options["temperature"])
        if options.get("num_beams"):
            kwargs.update(beam_size=options["num_beams"])
        results = generator.generate_batch(tokens, **kwargs)
        return [len(r.sequences_ids[0]) for r in results]

    return run


def run_peer(system: str, script: str, python, hf_dir, work, loads, new, runs, results, ours=None):
    """A peer that needs a venv of its own, run as `python script HF_DIR WORKLOADS.json RUNS` after
    the alternating runs; it prints {workload: {"first", "times"[, "tokens"]}}. Where it returns tokens
    and `ours` (workload -> minigen's tokens) has the workload, they must be equal."""
    import subprocess

    spec = Path(work) / f"workloads-{system}.json"
    spec.write_text(json.dumps([{"name": n, "prompts": p, "options": o, "new": new} for n, p, o in loads]))
    print(f"running {system} with", python, flush=True)
    done = subprocess.run([python, str(Path(__file__).with_name(script)), str(hf_dir), str(spec), str(runs)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        print(f"{system} failed: {done.stderr.strip().splitlines()[-1:]}", flush=True)
        return
    for name, r in json.loads(done.stdout.strip().splitlines()[-1]).items():
        theirs = r.pop("tokens", None)
        if theirs is not None and name in (ours or {}) and not np.array_equal(np.asarray(theirs), ours[name]):
            raise SystemExit(f"{name}: {system} and minigen generated different tokens")
        tokens = new * len(next(p for n, p, _ in loads if n == name))
        r["tok_s"] = tokens / statistics.median(r["times"])
        results[(name, system)] = r
        print(f"{name:26s} {system:14s} {r['tok_s']:8.1f} tok/s   first call {r['first']:6.2f} s", flush=True)


# ---- model files ------------------------------------------------------------------------------


def write_random_checkpoint(hf_dir: Path, shape: dict):
    """A random GPT-2 in the Hugging Face format, with a word-level tokenizer ("t0", "t1", ...) so
    CTranslate2's converter, which wants a tokenizer, can read it too."""
    import torch
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    torch.manual_seed(0)
    config = transformers.GPT2Config(**shape, bos_token_id=shape["vocab_size"] - 1, eos_token_id=shape["vocab_size"] - 1)
    transformers.GPT2LMHeadModel(config).save_pretrained(hf_dir)
    vocab = {f"t{i}": i for i in range(shape["vocab_size"] - 1)}
    vocab["<|endoftext|>"] = shape["vocab_size"] - 1
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>",
                                                eos_token="<|endoftext|>", unk_token="<|endoftext|>")
    fast.save_pretrained(hf_dir)


# ---- measurements -----------------------------------------------------------------------------


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory_bandwidth_gbs(gib: float = 1.0, runs: int = 5) -> float:
    """Memory read bandwidth as XLA on this machine achieves it: the best (median over runs) of a
    sum over `gib` GiB of float32 and a matrix-vector product over the same bytes (the access
    pattern of a batch-1 decode step), in GB/s."""
    import tensorflow as tf

    cols = 1024
    data = tf.Variable(tf.ones([int(gib * 2**30 / 4 / cols), cols], tf.float32))
    vector = tf.ones([cols, 1], tf.float32)
    probes = {
        "sum": tf.function(lambda: tf.reduce_sum(data), jit_compile=True),
        "matvec": tf.function(lambda: tf.reduce_sum(tf.matmul(data, vector)), jit_compile=True),
    }
    best = 0.0
    for probe in probes.values():
        probe()
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            probe().numpy()
            times.append(time.perf_counter() - start)
        best = max(best, gib * 2**30 / statistics.median(times) / 1e9)
    del data
    gc.collect()
    return best


def weight_bytes_per_token(shape: dict, bytes_per_weight: int = 4) -> int:
    """Bytes a batch-1 decode step must read: every block matrix and the tied LM head."""
    d, layers, vocab = shape["n_embd"], shape["n_layer"], shape["vocab_size"]
    per_block = d * 3 * d + d * d + 2 * d * 4 * d
    return (layers * per_block + vocab * d) * bytes_per_weight


def machine_name() -> str:
    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}"


# ---- the run ----------------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model and 2 runs: a smoke test of the script")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per system and workload (default 5)")
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--systems", default="minigen,minigen-bf16,minigen-fp16,transformers,ctranslate2",
                        help="comma-separated subset of the default list")
    parser.add_argument("--peer-python", default=None,
                        help="python of a venv with transformers<5 + tf-keras: also run the reference's TF + XLA "
                             "generate (benchmarks/peer_tf_xla.py), after the alternating runs")
    parser.add_argument("--reference-python", default=str(ROOT / ".venv-ref" / "bin" / "python"),
                        help="python of a venv with transformers 4.55.4 + torch (`make reference-venv`): contrastive "
                             "search's reference, run after the alternating runs (skipped if absent)")
    parser.add_argument("--speculative", action="store_true",
                        help="benchmark prompt lookup and the shipped draft/target pair instead (see above)")
    parser.add_argument("--out", default=None,
                        help="directory for the table and chart (default benchmarks/results/, a temp dir with --quick)")
    args = parser.parse_args(argv)
    if args.speculative:
        return speculative_main(args)
    shape = SHAPES["quick" if args.quick else "small"]
    runs = 2 if args.quick else args.runs
    new = 8 if args.quick else args.new_tokens
    prompt_len = 8 if args.quick else args.prompt_len
    wanted = args.systems.split(",")

    work = tempfile.mkdtemp(prefix="minigen-bench-")
    hf_dir, mg_dir = Path(work) / "hf", Path(work) / "minigen"
    print(f"machine: {machine_name()}", flush=True)
    print(f"writing a random GPT-2 ({shape['n_layer']} layers, width {shape['n_embd']}) to {work}", flush=True)
    write_random_checkpoint(hf_dir, shape)
    from weights_tools.convert import convert

    convert(hf_dir, mg_dir)

    makers = {
        "minigen": lambda: minigen_system(mg_dir, new),
        "minigen-bf16": lambda: minigen_system(mg_dir, new, "bfloat16"),
        "minigen-fp16": lambda: minigen_system(mg_dir, new, "float16"),
        "transformers": lambda: transformers_system(hf_dir, new),
        "ctranslate2": lambda: ctranslate2_system(hf_dir, new, work),
    }
    systems, rss, first_call = {}, {}, {}
    first_name, first_prompts, first_options = workloads(shape["vocab_size"], prompt_len, new)[0]
    for name in wanted:
        before = rss_mb()
        try:
            systems[name] = makers[name]()
        except ImportError as err:
            print(f"skipping {name}: {err} (pip install -e .[bench])", flush=True)
            continue
        start = time.perf_counter()
        systems[name](first_prompts, first_options)  # touch the weights (some load lazily) and warm up
        first_call[name] = time.perf_counter() - start
        rss[name] = rss_mb() - before
    probe_gib = 0.25 if args.quick else 1.0
    bandwidth = memory_bandwidth_gbs(probe_gib)

    results = {}  # (workload, system) -> dict
    for wname, prompts, options in workloads(shape["vocab_size"], prompt_len, new):
        # reduced precision only at batch-1 greedy: what it gives on this CPU is the question
        active = [s for s in systems if not (s.startswith("minigen-") and wname != "b1 greedy")
                  and runs_workload(s, options)]
        tokens = len(prompts) * new
        for s in active:
            start = time.perf_counter()
            lengths = systems[s](prompts, options)
            first = time.perf_counter() - start
            if any(n != new for n in lengths):
                raise SystemExit(f"{s} on {wname!r} generated {lengths} tokens, not {new} per row")
            results[(wname, s)] = dict(first=first_call[s] if wname == first_name else first, times=[])
        for _ in range(runs):
            for s in active:
                start = time.perf_counter()
                systems[s](prompts, options)
                results[(wname, s)]["times"].append(time.perf_counter() - start)
        for s in active:
            r = results[(wname, s)]
            r["tok_s"] = tokens / statistics.median(r["times"])
            print(f"{wname:26s} {s:14s} {r['tok_s']:8.1f} tok/s   first call {r['first']:6.2f} s", flush=True)

    contrastive = {}
    if "minigen" in systems:
        for wname, prompts, options in workloads(shape["vocab_size"], prompt_len, new):
            if "penalty_alpha" in options:
                systems["minigen"](prompts, options)
                contrastive[wname] = systems["minigen"].last
    if Path(args.reference_python).exists():  # its contrastive search, and its greedy beside it
        loads = [w for w in workloads(shape["vocab_size"], prompt_len, new) if w[0] in ("b1 greedy", *contrastive)]
        run_peer("transformers-4.55", "peer_hf455.py", args.reference_python, hf_dir, work, loads, new, runs,
                 results, contrastive)
    else:
        print(f"no transformers 4.55 venv at {args.reference_python} (make reference-venv): no contrastive peer", flush=True)
    if args.peer_python:
        run_peer("transformers-tf-xla", "peer_tf_xla.py", args.peer_python, hf_dir, work,
                 workloads(shape["vocab_size"], prompt_len, new), new, runs, results)

    recompiles = None
    if "minigen" in systems:  # a new prompt length in an already-compiled bucket must not compile
        model = systems["minigen"].model
        traces = model.trace_count
        systems["minigen"]([first_prompts[0][: prompt_len - 3]], first_options)
        recompiles = model.trace_count - traces
    ceiling = bandwidth * 1e9 / weight_bytes_per_token(shape)
    report = render(shape, new, prompt_len, runs, (bandwidth, probe_gib), ceiling, results, rss)
    if recompiles is not None:
        report += (f"A prompt of {prompt_len - 3} tokens after the {prompt_len}-token runs (same bucket of 16): "
                   f"{recompiles} new compiles.\n")
    out = write_report(args, work, "quick" if args.quick else "gpt2-small", report,
                       {"machine": machine_name(), "bandwidth_gbs": bandwidth, "ceiling_tok_s": ceiling,
                        "results": {f"{w} | {s}": r for (w, s), r in results.items()}, "rss_mb": rss})
    chart(results, out / ("quick.png" if args.quick else "gpt2-small.png"))


def write_report(args, work, stem: str, report: str, data: dict) -> Path:
    """Print the report and write it (markdown) and the raw results (JSON) to the results directory."""
    print(report)
    out = Path(args.out or (Path(work) / "results" if args.quick else ROOT / "benchmarks" / "results"))
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.md").write_text(report)
    (out / f"{stem}.json").write_text(json.dumps(data, indent=1))
    print(f"wrote {out / (stem + '.md')}", flush=True)
    return out


# ---- speculative decoding ------------------------------------------------------------------------

HELD_OUT = ROOT.parent / "shared" / "data" / "corpora" / "gutenberg-classics" / "98-a-tale-of-two-cities.txt"
LOOKUP_K, DRAFT_K = 8, 3


def speculative_tasks(tokenizer, quick: bool):
    """(name, prompts as id lists, max_new_tokens) from the held-out novel (not seen in training)."""
    if not HELD_OUT.is_file():
        raise SystemExit(f"--speculative needs the held-out novel at {HELD_OUT} (see ../shared/data/SOURCE.md)")
    text = HELD_OUT.read_text(encoding="utf-8")
    paragraphs = [" ".join(p.split()) for p in text.split("\n\n")]
    passages = [p for p in paragraphs if 250 < len(p) < 400][10:16]
    sentences = [p for p in paragraphs if 60 < len(p) < 160][40:46]
    count = 2 if quick else 6
    repeat = []  # the passage, a blank line, then its first words: the model should copy the rest
    for p in passages[:count]:
        ids = tokenizer.encode(p)
        repeat.append(ids + tokenizer.encode("\n\n") + ids[:4])
    openings = [tokenizer.encode(s) for s in sentences[:count]]
    new = 16 if quick else 96
    return [("repeat a passage (input-grounded)", repeat, new), ("continue novel openings", openings, new)]


def speculative_main(args):
    import torch
    import transformers

    import minigen
    from minigen.weights import resolve
    from weights_tools.export_hf import export_hf

    runs = 2 if args.quick else args.runs
    work = tempfile.mkdtemp(prefix="minigen-bench-spec-")
    target, draft = minigen.load("gutenberg-6l"), minigen.load("gutenberg-2l")
    hf_target = transformers.GPT2LMHeadModel.from_pretrained(export_hf(resolve("gutenberg-6l"), f"{work}/t")).eval()
    hf_draft = transformers.GPT2LMHeadModel.from_pretrained(export_hf(resolve("gutenberg-2l"), f"{work}/d")).eval()
    torch.set_num_threads(os.cpu_count() or 1)
    print(f"machine: {machine_name()}", flush=True)

    def ours(options):
        def run(prompt, new):
            out = target.generate([prompt], max_new_tokens=new, min_new_tokens=new, return_dict=True, **options)
            return out.sequences[0, len(prompt):], out.speculation
        return run

    def theirs(options):
        def run(prompt, new):
            with torch.inference_mode():
                ids = torch.tensor([prompt], dtype=torch.long)
                out = hf_target.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new,
                                         min_new_tokens=new, do_sample=False, pad_token_id=0, **options)
            return out[0, len(prompt):].numpy(), None
        return run

    systems = {
        "minigen greedy": ours({}),
        f"minigen prompt lookup k={LOOKUP_K}": ours(dict(prompt_lookup_num_tokens=LOOKUP_K)),
        f"minigen draft k={DRAFT_K}": ours(dict(assistant_model=draft, num_assistant_tokens=DRAFT_K)),
        "transformers greedy": theirs({}),
        f"transformers prompt lookup k={LOOKUP_K}": theirs(dict(prompt_lookup_num_tokens=LOOKUP_K)),
        f"transformers assisted k={DRAFT_K}": theirs(dict(assistant_model=hf_draft, num_assistant_tokens=DRAFT_K,
                                                           num_assistant_tokens_schedule="constant")),
    }
    results = {}  # (task, system) -> dict
    for task, prompts, new in speculative_tasks(target.tokenizer, args.quick):
        reference = [ours({})(p, new)[0] for p in prompts]  # also compiles minigen's plain loop
        for name, run in systems.items():
            accepted = []
            for p, want in zip(prompts, reference):  # warm-up (compiles) and the exactness check
                got, stats = run(p, new)
                if not np.array_equal(got, want):
                    raise SystemExit(f"{name} on {task!r}: tokens differ from minigen's plain greedy output")
                if stats:
                    accepted.append(stats["mean_accepted_tokens"])
            results[(task, name)] = dict(times=[], accepted=float(np.mean(accepted)) if accepted else None)
        for _ in range(runs):  # one run = every prompt of the task, systems alternating
            for name, run in systems.items():
                start = time.perf_counter()
                for p in prompts:
                    run(p, new)
                results[(task, name)]["times"].append(time.perf_counter() - start)
        for name in systems:
            r = results[(task, name)]
            r["tok_s"] = len(prompts) * new / statistics.median(r["times"])
            extra = f"  {r['accepted']:.2f} accepted/step" if r["accepted"] is not None else ""
            print(f"{task:36s} {name:34s} {r['tok_s']:8.1f} tok/s{extra}", flush=True)
    write_report(args, work, "speculative-quick" if args.quick else "speculative",
                 render_speculative(results, systems, runs),
                 {"machine": machine_name(), "results": {f"{t} | {s}": r for (t, s), r in results.items()}})


def render_speculative(results, systems, runs) -> str:
    tasks = list(dict.fromkeys(t for t, _ in results))
    lines = [
        f"Machine: {machine_name()}. Shipped target gutenberg-6l (6 x 256) and draft gutenberg-2l (2 x 256), batch 1, "
        f"greedy, prompts from the held-out novel, median of {runs} runs (each run = all prompts of the task), "
        "systems alternating; every system's tokens equal minigen's plain greedy output (checked). "
        "Command: `python benchmarks/bench_generate.py --speculative`.",
        "",
        "| system | " + " | ".join(f"{t} (tok/s)" for t in tasks) + " | " + " | ".join(
            f"{t}: speed-up, accepted/step" for t in tasks) + " |",
        "|---|" + "---|" * (2 * len(tasks)),
    ]
    for name in systems:
        speeds = [f"{results[(t, name)]['tok_s']:.1f}" for t in tasks]
        ratios = []
        for t in tasks:
            r = results[(t, name)]
            base = results[(t, "minigen greedy" if name.startswith("minigen") else "transformers greedy")]
            accepted = f", {r['accepted']:.2f}" if r["accepted"] is not None else ""
            ratios.append(f"{r['tok_s'] / base['tok_s']:.2f}x{accepted}")
        lines.append(f"| {name} | " + " | ".join(speeds) + " | " + " | ".join(ratios) + " |")
    lines += ["", "Speed-ups are against the same library's plain greedy (minigen rows vs minigen greedy, "
              "transformers rows vs transformers greedy)."]
    return "\n".join(lines) + "\n"


def render(shape, new, prompt_len, runs, bandwidth_probe, ceiling, results, rss) -> str:
    bandwidth, probe_gib = bandwidth_probe
    names = [w for w, _, _ in workloads(shape["vocab_size"], prompt_len, new)]
    systems = list(dict.fromkeys(s for _, s in results))
    lines = [
        f"Machine: {machine_name()}. GPT-2 {shape['n_layer']} layers x {shape['n_embd']} (random weights, float32 "
        f"unless named), prompt {prompt_len} -> {new} new tokens, median of {runs} runs after a warm-up call, "
        "systems alternating. Command: `python benchmarks/bench_generate.py`.",
        "",
        "| workload | " + " | ".join(systems) + " |",
        "|---|" + "---|" * len(systems),
    ]
    for w in names:
        cells = [f"{results[(w, s)]['tok_s']:.1f}" if (w, s) in results else "" for s in systems]
        lines.append(f"| {w} (tok/s) | " + " | ".join(cells) + " |")
    firsts = [f"{results[(names[0], s)]['first']:.1f} s" if (names[0], s) in results else "" for s in systems]
    lines.append("| first call, b1 greedy | " + " | ".join(firsts) + " |")
    lines.append("| resident memory added by loading + first call | " + " | ".join(f"{rss[s]:.0f} MB" if s in rss else "(own process)" for s in systems) + " |")
    lines += ["", "minigen speed-up (float32):", ""]
    for w in names:
        if (w, "minigen") not in results:
            continue
        ours = results[(w, "minigen")]["tok_s"]
        peers = [f"{ours / results[(w, s)]['tok_s']:.2f}x {s}" for s in systems
                 if not s.startswith("minigen") and (w, s) in results]
        lines.append(f"- {w}: " + ", ".join(peers))
    lines += [
        "",
        f"Roofline: memory read bandwidth {bandwidth:.1f} GB/s (best of an XLA sum and mat-vec over {probe_gib:g} GiB); a float32 batch-1 step reads "
        f"{weight_bytes_per_token(shape) / 1e6:.0f} MB of weights, so at most {ceiling:.1f} tok/s (weights held in bfloat16: "
        f"{2 * ceiling:.1f}, in int8 as CTranslate2's int8 holds them: {4 * ceiling:.1f}).",
    ]
    if (names[0], "minigen") in results:
        ours = results[(names[0], "minigen")]["tok_s"]
        lines.append(f"minigen b1 greedy reaches {ours:.1f} tok/s = {ours / ceiling:.0%} of that ceiling.")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lines.append(f"Peak resident memory of the whole benchmark process: {peak:.0f} MB.")
    return "\n".join(lines) + "\n"


def chart(results, path: Path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no chart (pip install -e .[bench])")
        return
    names = list(dict.fromkeys(w for w, _ in results))
    systems = list(dict.fromkeys(s for _, s in results))
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.6))
    for ax, w in zip(np.atleast_1d(axes), names):
        present = [s for s in systems if (w, s) in results]
        values = [results[(w, s)]["tok_s"] for s in present]
        colors = ["tab:orange" if s.startswith("minigen") else "tab:gray" for s in present]
        ax.barh(present, values, color=colors)
        ax.set_title(w, fontsize=10)
        ax.set_xlabel("tokens / s")
        ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
