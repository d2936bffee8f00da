"""transformers 4.55.4 (PyTorch), the last release with contrastive search in its core, run by
bench_generate.py --reference-python in its own venv (`make reference-venv` builds .venv-ref).

    .venv-ref/bin/python benchmarks/peer_hf455.py HF_DIR WORKLOADS.json RUNS

Reads the workloads (name, prompts, options, new tokens) bench_generate.py wrote, runs each with
`GPT2LMHeadModel.generate` (every row forced to the full length), and prints one JSON object:
{workload: {"first": seconds, "times": [seconds, ...], "tokens": the last run's new tokens}}.
Needs torch and transformers 4.55.4; not minigen.
"""

import json
import os
import sys
import time

import torch
import transformers


def main():
    hf_dir, workloads_file, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if transformers.__version__ != "4.55.4":
        raise SystemExit(f"needs transformers 4.55.4, found {transformers.__version__}")
    torch.set_num_threads(os.cpu_count() or 1)
    model = transformers.GPT2LMHeadModel.from_pretrained(hf_dir).eval()
    results = {}
    for item in json.load(open(workloads_file)):
        prompts, new = item["prompts"], item["new"]
        options = {"top_k": 0, **item["options"]}
        width = max(len(p) for p in prompts)
        ids = torch.zeros((len(prompts), width), dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1

        def run():
            with torch.inference_mode():
                return model.generate(ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                                      pad_token_id=0, **options)

        start = time.perf_counter()
        out = run()
        first = time.perf_counter() - start
        if out.shape[1] != width + new:
            raise SystemExit(f"{item['name']}: generated {out.shape[1] - width} tokens, not {new}")
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            out = run()
            times.append(time.perf_counter() - start)
        results[item["name"]] = {"first": first, "times": times, "tokens": out[:, width:].tolist()}
    print(json.dumps(results))


if __name__ == "__main__":
    main()
