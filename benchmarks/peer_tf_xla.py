"""The transformers 4.x TensorFlow + XLA peer, run by bench_generate.py --peer-python in its own venv.

    <venv with "transformers<5" tf-keras>/bin/python benchmarks/peer_tf_xla.py HF_DIR WORKLOADS.json RUNS

Reads the workloads (name, prompts, options, new tokens) that bench_generate.py wrote, runs each
with `tf.function(model.generate, jit_compile=True)` (the reference library's XLA path), and
prints one JSON object: {workload: {"first": seconds, "times": [seconds, ...]}}.
Only needs tensorflow, tf-keras and transformers 4.x; not minigen.
"""

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import transformers  # noqa: E402


def main():
    hf_dir, workloads_file, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    # from_pretrained would iterate a safe_open handle, which current safetensors no longer allows:
    # read the checkpoint ourselves and hand transformers the dict it converts from
    from safetensors.numpy import load_file
    from transformers.modeling_tf_pytorch_utils import load_pytorch_state_dict_in_tf2_model

    model = transformers.TFGPT2LMHeadModel(transformers.GPT2Config.from_pretrained(hf_dir))
    load_pytorch_state_dict_in_tf2_model(model, load_file(os.path.join(hf_dir, "model.safetensors")))
    xla_generate = tf.function(model.generate, jit_compile=True)
    results = {}
    for item in json.load(open(workloads_file)):
        prompts, options, new = item["prompts"], dict(item["options"]), item["new"]
        width = max(len(p) for p in prompts)
        ids = np.zeros((len(prompts), width), np.int32)
        mask = np.zeros((len(prompts), width), np.int32)
        for i, p in enumerate(prompts):
            ids[i, width - len(p):] = p
            mask[i, width - len(p):] = 1
        if options.get("do_sample"):
            options.update(top_k=0, seed=[1, 2])
        kwargs = dict(input_ids=tf.constant(ids), attention_mask=tf.constant(mask), max_new_tokens=new,
                      min_length=width + new, pad_token_id=0, **options)
        start = time.perf_counter()
        out = xla_generate(**kwargs)
        first = time.perf_counter() - start
        if out.shape[1] != width + new:
            raise SystemExit(f"{item['name']}: generated {out.shape[1] - width} tokens, not {new}")
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            xla_generate(**kwargs).numpy()
            times.append(time.perf_counter() - start)
        results[item["name"]] = {"first": first, "times": times}
    print(json.dumps(results))


if __name__ == "__main__":
    main()
