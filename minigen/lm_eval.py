"""minigen as a backend of EleutherAI's lm-evaluation-harness (`pip install "minigen[eval]"`).

    python -m minigen.lm_eval run --model minigen --model_args pretrained=DIR --tasks hellaswag ...

lm-eval 0.4.x finds a `--model` only in its registry, filled when a backend's module is imported,
so this command registers "minigen" and hands every argument after `run` to the harness's own
command line. In Python: `import minigen.lm_eval` registers it for `lm_eval.simple_evaluate`.

The three requests: `loglikelihood` and `loglikelihood_rolling` are minigen.scoring's (the harness's
tokenisation and windowing rules, as its `hf` backend applies them); `generate_until` runs
`generate` per group of requests with equal generation settings, each request's `until` strings
stopping it inside the compiled loop, the text cut at the first of them as the harness does.
--model_args: pretrained (a minigen model directory or a shipped model's name), dtype, batch_size,
max_length (default: the model's n_positions), max_gen_toks (default 256).
"""

from __future__ import annotations

import json
import sys

import lm_eval.models  # noqa: F401 - the built-in backends first: the registry loads them only while it is empty
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

import minigen

from . import engine as engines
from . import scoring
from .generation.options import BY_NAME



def _batch_size(value) -> int:
    if value in (None, "auto") or (isinstance(value, str) and value.startswith("auto")):
        return 16  # one compiled pass per bucket whatever the batch, so no search for the largest
    try:
        size = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"batch_size must be an int >= 1 or 'auto', got {value!r}") from None
    if size < 1:
        raise ValueError(f"batch_size must be an int >= 1 or 'auto', got {value!r}")
    return size


@register_model("minigen")
class MinigenLM(LM):
    """The harness's view of a minigen model (see the module docstring for --model_args)."""

    def __init__(self, pretrained=None, dtype: str = "float32", batch_size=16, max_length=None,
                 max_gen_toks=256, device=None, max_batch_size=None, **unknown):
        super().__init__()
        if unknown:
            raise ValueError(f"unknown --model_args key(s) for minigen: {', '.join(sorted(unknown))}; it takes "
                             "pretrained, dtype, batch_size, max_length, max_gen_toks")
        # device / max_batch_size: the harness passes them to every backend (its default device is
        # cuda:0 even without a GPU); TensorFlow places minigen's work itself, and batches are fixed
        self.model = minigen.load(pretrained, dtype=dtype)
        if self.model.tokenizer is None:
            raise ValueError(f"{pretrained!r} has no tokenizer.json (or vocab.json + merges.txt): the harness "
                             "sends text")
        self.batch_size = _batch_size(batch_size)
        self.max_length = int(max_length or self.model.config.n_positions)
        self.max_gen_toks = int(max_gen_toks)

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        return scoring.loglikelihood(self.model, [tuple(r.args) for r in requests], self.batch_size,
                                     max_length=self.max_length)

    def loglikelihood_rolling(self, requests) -> list[float]:
        return scoring.loglikelihood_rolling(self.model, [r.args[0] for r in requests], self.batch_size,
                                             max_length=self.max_length)

    def generate_until(self, requests) -> list[str]:
        results: list[str | None] = [None] * len(requests)
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(json.dumps(r.args[1], sort_keys=True, default=str), []).append(i)
        for indices in groups.values():
            settings = dict(requests[indices[0]].args[1])
            until = settings.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            limit = int(settings.pop("max_gen_toks", settings.pop("max_new_tokens", self.max_gen_toks)))
            options = {k: settings.pop(k) for k in list(settings) if k in BY_NAME}  # generate's own options
            if settings:
                raise ValueError(f"generation settings minigen does not know: {', '.join(sorted(settings))}")
            if not options.get("do_sample"):
                options.pop("temperature", None)  # the harness sends temperature 0 with greedy decoding
                options["do_sample"] = False
            contexts = [requests[i].args[0] for i in indices]
            if not engines.unsupported(self.model, options):  # each request a request of the engine
                for i, text in zip(indices, self._generate_many(contexts, until, limit, options)):
                    results[i] = text
                continue
            for start in range(0, len(indices), self.batch_size):
                batch = indices[start:start + self.batch_size]
                for i, text in zip(batch, self._generate([requests[i].args[0] for i in batch], until, limit, options)):
                    results[i] = text
        return results

    def _contexts(self, contexts: list[str], limit: int) -> list[list[int]]:
        """Each context's ids, keeping its last max_length - limit tokens (the hf backend's truncation)."""
        room = self.max_length - limit
        if room < 1:
            raise ValueError(f"max_gen_toks ({limit}) must be below the model's max_length ({self.max_length})")
        return [(self.model.tokenizer.encode(c) or [self.model.config.eos_token_id])[-room:] for c in contexts]

    def _generate_many(self, contexts: list[str], until: list[str], limit: int, options: dict) -> list[str]:
        """As _generate, on the request engine (batch_size slots): no request waits for a longer one."""
        stops = [s for s in until if s]
        requests = [dict(options, input_ids=ids, max_new_tokens=limit, stop_strings=stops)
                    for ids in self._contexts(contexts, limit)]
        texts = [r.text for r in self.model.generate_many(requests, slots=self.batch_size, progress=False)]
        for stop in stops:
            texts = [t.split(stop)[0] for t in texts]
        return texts

    def _generate(self, contexts: list[str], until: list[str], limit: int, options: dict) -> list[str]:
        """Greedy (or sampled) continuations of `contexts`, each cut at its first `until` string; a
        context keeps its last max_length - limit tokens, as the harness's hf backend truncates."""
        tokenizer = self.model.tokenizer
        rows = self._contexts(contexts, limit)
        width = max(len(r) for r in rows)
        ids = [[tokenizer.pad_id] * (width - len(r)) + r for r in rows]
        mask = [[0] * (width - len(r)) + [1] * len(r) for r in rows]
        stops = [s for s in until if s]
        out = self.model.generate(ids, mask, max_new_tokens=limit, stop_strings=stops, **options)
        texts = tokenizer.decode_batch(out[:, width:])
        for stop in stops:
            texts = [t.split(stop)[0] for t in texts]
        return texts


def main(argv=None) -> int:
    """`python -m minigen.lm_eval run ...`: the harness's command line with minigen registered."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] != "run":
        print("usage: python -m minigen.lm_eval run --model minigen --model_args pretrained=DIR --tasks TASKS ...\n"
              "(every argument after `run` goes to lm-eval's own `run` command)", file=sys.stderr)
        return 2
    from lm_eval.__main__ import cli_evaluate  # noqa: PLC0415 - the harness's command line, only when run

    sys.argv = ["lm-eval", *argv]
    cli_evaluate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
