"""The reference for contrastive search, DoLa and group beam search: transformers 4.55.4 (the last
release with them in core), run in its own venv (`make reference-venv` makes .venv-ref) by
tests/test_contrastive.py, tests/test_dola.py and tests/test_group_beams.py.

Reads JSON jobs from stdin: [{"model_dir": HF checkpoint, "cases": [{"ids", "mask", "options"}]}, ...]
(one process for all, as importing torch and transformers takes seconds); writes {"transformers":
version, "outputs": one list per job of {"sequences": right-padded to prompt + max_new_tokens, and
"scores" (log-softmax of the processed logits at the chosen token) when options ask; beam search:
"sequences_scores" and "first_scores", step 0's processed scores [rows, vocab], instead)}}.
"""

import json
import sys

import torch
import transformers


def run(model, case):
    options = dict(case["options"])
    ids, mask = torch.tensor(case["ids"]), torch.tensor(case["mask"])
    width = ids.shape[1] + options["max_new_tokens"]
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, return_dict_in_generate=True, **options)
    seq = out.sequences
    seq = torch.nn.functional.pad(seq, (0, width - seq.shape[1]), value=options["pad_token_id"])
    result = {"sequences": seq.tolist()}
    if options.get("output_scores") and options.get("num_beams", 1) > 1:  # beam search: hypothesis and step-0 scores
        result["sequences_scores"] = out.sequences_scores.tolist()
        result["first_scores"] = out.scores[0].tolist()
    elif options.get("output_scores"):
        new = out.sequences[:, ids.shape[1]:]
        logprobs = [torch.log_softmax(s.float(), -1).gather(1, new[:, i:i + 1])[:, 0] for i, s in enumerate(out.scores)]
        result["scores"] = torch.stack(logprobs, 1).tolist()
    return result


def main():
    outputs = []
    for job in json.load(sys.stdin):
        model = transformers.GPT2LMHeadModel.from_pretrained(job["model_dir"]).eval()
        outputs.append([run(model, case) for case in job["cases"]])
        del model
    json.dump({"transformers": transformers.__version__, "outputs": outputs}, sys.stdout)


if __name__ == "__main__":
    main()
