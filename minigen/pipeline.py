"""Batch generation on Apache Beam: a `RunInference` model handler and the `minigen batch` pipeline.

Needs the optional extra (`pip install "minigen[beam]"`); the rest of minigen never imports this module.

    JSONL lines --number--> (source, line, text) --validate--> prompts --RunInference--> results JSONL
                                                         \\--> error records JSONL (id, error, input)

Each input line is a JSON object with a "prompt" string and optionally an "id" (any JSON value), or a
bare JSON string. A record without an id gets its line number (0-based; "file:line" when the input
pattern matches several files), so results can be joined back to inputs whatever order a runner
writes them in. Blank lines are not records. A line that is not UTF-8, not JSON, holds a lone
surrogate escape ("\\ud800"), has no prompt string, or whose prompt is empty or too long for the
model becomes an error record in the separate errors output; the rest of the batch completes.

`MinigenModelHandler` loads the model once per worker process and runs each batch Beam hands it on
the worker's request engine (minigen/engine.py: `rows` slots, each prompt a request); for options
the engine does not take (beams, contrastive search, max_time, ...) it groups the batch by prompt
bucket (`pad_to_multiple_of`), padding every group to a fixed number of rows, so a worker compiles
one function per bucket and reuses it for every batch after.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from collections import defaultdict
from typing import Any, Iterable, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.io import fileio
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from .config import GPT2Config
from .generation.config import GenerationConfig
from .tokenizer import Tokenizer
from .weights import load, resolve

METRICS_NAMESPACE = "minigen"
logger = logging.getLogger("minigen")


# ---- reading and validating ----------------------------------------------------------------------


def numbered_lines(readable_file) -> Iterable[tuple[str, int, bytes]]:
    """(file path, 0-based line number, the line's bytes) for every line of one matched file.

    Lines stay bytes here: one that is not UTF-8 becomes an error record in ValidatePrompts
    instead of failing the whole pipeline.
    """
    path = readable_file.metadata.path
    with readable_file.open() as f:
        for number, raw in enumerate(f):
            yield path, number, raw.rstrip(b"\r\n")


def _not_json(constant: str):
    """json.loads accepts NaN, Infinity and -Infinity, which JSON does not: such a line is an error."""
    raise json.JSONDecodeError(f"{constant} is not a JSON value", constant, 0)


def _writable(value) -> bool:
    """Whether `value` can be written as UTF-8 JSON (no lone surrogates inside)."""
    try:
        json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
        return True
    except (UnicodeEncodeError, ValueError):
        return False


class ValidatePrompts(beam.DoFn):
    """Parse a numbered line into {"id", "prompt", "prompt_tokens"}; anything unusable goes to the
    "errors" output as {"id", "error", "input"} instead of failing the pipeline."""

    ERRORS = "errors"

    def __init__(self, model: str | None, max_new_tokens: int, single_file: bool):
        self.model, self.max_new_tokens, self.single_file = model, max_new_tokens, single_file

    def setup(self):
        path = resolve(self.model)
        self.tokenizer = Tokenizer.from_dir(path)
        self.n_positions = GPT2Config.from_json_file(f"{path}/config.json").n_positions
        self.errors = Metrics.counter(METRICS_NAMESPACE, "invalid_prompts")

    def process(self, item):
        path, number, raw = item
        record_id: Any = number if self.single_file else f"{path}:{number}"
        line = raw.decode("utf-8", errors="backslashreplace")  # for error records: always writable

        def error(reason):
            self.errors.inc()
            return beam.pvalue.TaggedOutput(self.ERRORS, {"id": record_id, "error": reason, "input": line})

        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as e:
            yield error(f"line {number + 1} is not UTF-8 text (byte {raw[e.start]:#04x} at column {e.start + 1})")
            return
        if not line.strip():
            return
        try:
            record = json.loads(line, parse_constant=_not_json)
        except json.JSONDecodeError as e:
            yield error(f"line {number + 1} is not JSON ({e.msg}); write one JSON object or string per line")
            return
        except RecursionError:
            yield error(f"line {number + 1} is nested too deeply")
            return
        if isinstance(record, dict) and "id" in record and _writable(record["id"]):
            record_id = record["id"]
        if not _writable(record):  # "\ud800" in JSON decodes to a lone surrogate: not text
            yield error(f"line {number + 1} holds a lone surrogate escape, which is not valid Unicode text")
            return
        if isinstance(record, dict):
            prompt = record.get("prompt")
        else:
            prompt = record
        if not isinstance(prompt, str):
            yield error('no prompt: a line must be a JSON string or an object with a "prompt" string')
            return
        tokens = len(self.tokenizer.encode(prompt)) if prompt else 0
        if tokens == 0:
            yield error("the prompt is empty: every prompt needs at least one token")
            return
        if tokens + self.max_new_tokens > self.n_positions:
            yield error(f"the prompt is too long: {tokens} tokens + max_new_tokens {self.max_new_tokens} exceeds "
                        f"the model's n_positions ({self.n_positions})")
            return
        yield {"id": record_id, "prompt": prompt, "prompt_tokens": tokens}


# ---- inference --------------------------------------------------------------------------------------

GENERATED_HERE = 0  # prompts generated by handlers in this process (the DirectRunner's workers): for Ctrl-C


class MinigenModelHandler(ModelHandler[dict, PredictionResult, Any]):
    """RunInference handler: examples are {"id", "prompt", "prompt_tokens"} dicts (as
    ValidatePrompts yields them); each result's inference is {"id", "prompt", "text",
    "prompt_tokens", "new_tokens"} ("text" a list with num_return_sequences > 1).

    Args:
        model: a minigen model directory or shipped model name (None: the default shipped model).
        rows: prompts per generate call; every call is padded to this many rows so the compiled
            function depends on the bucket alone.
        dtype: what the weights are held and multiplied in (minigen.load; None: the file's own).
        **options: `generate` options (max_new_tokens, do_sample, temperature, top_k, top_p,
            num_beams, num_return_sequences, repetition_penalty, seed, pad_to_multiple_of, ...).
            max_time: seconds per generate call (of `rows` prompts): the call streams its tokens and
            stops after that long; each result then says whether it was cut ("truncated": no EOS and
            fewer than max_new_tokens new tokens). Greedy search, sampling, contrastive search.
    """

    def __init__(self, model: str | None = None, rows: int = 8, dtype: str | None = None, **options):
        super().__init__()
        if not isinstance(rows, int) or rows < 1:
            raise ValueError(f"rows must be an int >= 1, got {rows!r}")
        # bad options fail at construction; max_time is honoured by streaming each call
        GenerationConfig.from_options(**options).check(None, streaming=options.get("max_time") is not None)
        self.model, self.rows, self.dtype, self.options = model, rows, dtype, options
        self.pad_to = options.get("pad_to_multiple_of", GenerationConfig.pad_to_multiple_of)
        self.done = 0  # prompts this worker's handler has generated (progress lines)
        self.compiles = Metrics.counter(METRICS_NAMESPACE, "compiles")
        self.generated = Metrics.counter(METRICS_NAMESPACE, "prompts_generated")

    def load_model(self):
        return load(self.model, dtype=self.dtype)

    def batch_elements_kwargs(self):
        return {"min_batch_size": 1, "max_batch_size": 4 * self.rows}

    def share_model_across_processes(self) -> bool:
        return False

    def run_inference(self, batch: Sequence[dict], model, inference_args=None) -> Iterable[PredictionResult]:
        began = time.perf_counter()
        by_bucket = defaultdict(list)
        for example in batch:
            by_bucket[-(-example["prompt_tokens"] // self.pad_to)].append(example)
        results = {}
        if self._takes_engine(model):
            for example, texts in zip(batch, self._generate_with_engine(model, batch)):
                results[id(example)] = (example, texts)
        for group in by_bucket.values() if not results else ():
            for start in range(0, len(group), self.rows):
                chunk = group[start:start + self.rows]
                for example, texts in zip(chunk, self._generate(model, [e["prompt"] for e in chunk])):
                    results[id(example)] = (example, texts)
        self.generated.inc(len(batch))
        self.done += len(batch)
        global GENERATED_HERE
        GENERATED_HERE += len(batch)
        new_tokens = sum(sum(n) for _, (_, n, _) in results.values())
        took = time.perf_counter() - began
        logger.info("%d prompt%s generated by this worker (this batch: %d new tokens in %.2f s, %.1f tok/s; "
                    "padding rows not counted)", self.done, "" if self.done == 1 else "s", new_tokens, took,
                    new_tokens / max(took, 1e-9))
        max_new = GenerationConfig.from_options(**self.options).for_prompt(1).max_new_tokens
        for example in batch:  # in the order given
            example, (texts, new_tokens, eos_seen) = results[id(example)]
            inference = {"id": example["id"], "prompt": example["prompt"],
                         "text": texts[0] if len(texts) == 1 else texts,
                         "prompt_tokens": example["prompt_tokens"],
                         "new_tokens": new_tokens[0] if len(new_tokens) == 1 else new_tokens}
            if self.options.get("max_time") is not None:
                cut = [n < max_new and not ended for n, ended in zip(new_tokens, eos_seen)]
                inference["truncated"] = cut[0] if len(cut) == 1 else cut
            yield PredictionResult(example, inference)

    def _takes_engine(self, model) -> bool:
        """Whether this worker's requests run on the request engine: options it takes, no max_time."""
        from .engine import unsupported  # noqa: PLC0415 - imports TensorFlow

        return self.options.get("max_time") is None and not unsupported(model, self.options)

    def _generate_with_engine(self, model, batch: Sequence[dict]) -> list[tuple[list[str], list[int], list[bool]]]:
        """(texts, new token counts, whether each ended with EOS) per example, from this worker's
        request engine: `rows` slots of the model's n_positions tokens (the longest request the
        validation lets through), made once per worker and model, so it compiles once per shape."""
        engines = self.__dict__.setdefault("_engines", {})
        if id(model) not in engines:
            engines[id(model)] = model.engine(slots=self.rows, max_length=model.config.n_positions)
        engine, traces = engines[id(model)], model.trace_count
        for i, example in enumerate(batch):
            engine.submit({"prompt": example["prompt"], **self.options}, request_id=i)
        done = {r.request_id: r for r in engine}
        self.compiles.inc(model.trace_count - traces)
        return [([done[i].text], [len(done[i].new_tokens)], [done[i].finish_reason == "eos"]) for i in range(len(batch))]

    def _generate(self, model, prompts: list[str]) -> list[tuple[list[str], list[int], list[bool]]]:
        """(texts, new token counts, whether each ended with EOS) per prompt; the call is padded to
        `rows` rows with copies of the last prompt, which are dropped."""
        # imported here: it loads TensorFlow, which only the workers that generate need
        from .generation.outputs import generated_mask

        tokenizer = model.tokenizer
        padded = prompts + [prompts[-1]] * (self.rows - len(prompts))
        ids, mask = tokenizer.encode_batch(padded)
        options = dict(self.options)
        options.setdefault("pad_token_id", tokenizer.pad_id)
        traces = model.trace_count
        max_time = options.pop("max_time", None)
        if max_time is None:
            new = model.generate(ids, mask, **options)[:, ids.shape[1]:]
        else:  # the loop comes back to the host between streamed chunks: the clock is read there
            chunks = list(model.stream_tokens(ids, mask, max_time=max_time, **options))
            rows = len(padded) * options.get("num_return_sequences", 1)
            new = np.concatenate(chunks, axis=1) if chunks else np.zeros((rows, 0), np.int32)
        self.compiles.inc(model.trace_count - traces)
        per = len(new) // len(padded)
        eos = GenerationConfig.from_options(**options).eos_ids(model.config)
        out = []
        for i in range(len(prompts)):
            rows = new[i * per:(i + 1) * per]
            counts = generated_mask(rows, eos).sum(axis=1)
            ended = np.isin(rows, eos).any(axis=1) if eos else np.zeros(len(rows), bool)
            out.append(([tokenizer.decode(r) for r in rows], [int(c) for c in counts], [bool(e) for e in ended]))
        return out


# ---- the pipeline -----------------------------------------------------------------------------------


def build(pipeline: beam.Pipeline, input_pattern: str, output: str, errors_output: str,
          handler: MinigenModelHandler, single_file: bool = True) -> None:
    """Add the read -> validate -> RunInference -> write steps to `pipeline`."""
    lines = (pipeline
             | "Match" >> fileio.MatchFiles(input_pattern)
             | "Open" >> fileio.ReadMatches()
             | "Number lines" >> beam.FlatMap(numbered_lines))
    checked = lines | "Validate" >> beam.ParDo(
        ValidatePrompts(handler.model, handler.options.get("max_new_tokens", 20), single_file)
    ).with_outputs(ValidatePrompts.ERRORS, main="prompts")
    (checked.prompts
     | "Generate" >> RunInference(handler)
     | "Results to JSON" >> beam.Map(lambda r: json.dumps(r.inference, ensure_ascii=False, allow_nan=False))
     | "Write results" >> beam.io.WriteToText(output, shard_name_template="", num_shards=1))
    (checked[ValidatePrompts.ERRORS]
     | "Errors to JSON" >> beam.Map(lambda e: json.dumps(e, ensure_ascii=False, allow_nan=False))
     | "Write errors" >> beam.io.WriteToText(errors_output, shard_name_template="", num_shards=1))


def run_pipeline(input_pattern: str, output: str, errors_output: str | None = None, model: str | None = None,
                 rows: int = 8, dtype: str | None = None, pipeline_args: Sequence[str] = (), **options) -> dict:
    """Run `minigen batch`'s pipeline and wait for it; returns its counters.

    input_pattern: a JSONL file or a file pattern; output / errors_output: JSONL files to write
    (errors_output defaults to output with ".errors.jsonl" in place of ".jsonl"). pipeline_args: Beam
    pipeline options (DirectRunner unless --runner says otherwise). **options: `generate` options.
    Returns {"compiles", "prompts_generated", "invalid_prompts"} summed over workers.
    """
    from apache_beam.metrics.metric import MetricsFilter

    errors_output = errors_output or default_errors_path(output)
    handler = MinigenModelHandler(model, rows=rows, dtype=dtype, **options)
    matched = matched_inputs(input_pattern)
    pipeline = beam.Pipeline(options=PipelineOptions(list(pipeline_args)))
    build(pipeline, input_pattern, output, errors_output, handler, single_file=len(matched) == 1)
    before = _beam_temp_dirs(output, errors_output)
    interrupted = False
    try:
        with noting_interrupts() as seen:
            try:
                result = pipeline.run()
                result.wait_until_finish()
            except BaseException:
                # Beam wraps a Ctrl-C inside a worker into RuntimeError("KeyboardInterrupt [while running ...]")
                interrupted = bool(seen)
                if interrupted:
                    raise KeyboardInterrupt from None
                raise
    finally:
        # the DirectRunner's job server makes a beam-temp* directory in the system temp directory and
        # never removes it, and WriteToText stages in beam-temp-* beside its output: remove what this
        # run added (the empty ones after a run; all of them after Ctrl-C, when nothing was finished)
        for leftover in _beam_temp_dirs(output, errors_output) - before:
            if interrupted:
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.rmdir(leftover)
    counters = {}
    for name in ("compiles", "prompts_generated", "invalid_prompts"):
        found = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE).with_name(name))["counters"]
        counters[name] = sum(c.committed or 0 for c in found)
    return counters


@contextlib.contextmanager
def noting_interrupts():
    """While the pipeline runs, Ctrl-C is noted (the yielded list gets an entry) before it raises
    KeyboardInterrupt as usual, so that it is known for what it was whatever Beam wraps it in. Only in
    the main thread, and only over Python's own handler (a program's handler is left alone)."""
    seen: list[bool] = []
    own = threading.current_thread() is threading.main_thread() and \
        signal.getsignal(signal.SIGINT) is signal.default_int_handler
    if not own:
        yield seen
        return

    def note(signum, frame):
        seen.append(True)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, note)
    try:
        yield seen
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def unknown_pipeline_options(args: Sequence[str]) -> list[str]:
    """The flags in `args` that no registered Beam PipelineOptions class declares.

    Beam itself only logs such flags and drops them; `minigen batch` refuses them instead, since a
    mistyped minigen flag lands here too. Uses the parser Beam builds in get_all_options.
    """
    from apache_beam.options.pipeline_options import _BeamArgumentParser

    parser = _BeamArgumentParser(allow_abbrev=False)
    for cls in {str(c): c for c in PipelineOptions.__subclasses__()}.values():
        cls._add_argparse_args(parser)  # noqa: SLF001 - what PipelineOptions.get_all_options does
    _, unknown = parser.parse_known_args(list(args))
    return [a for a in unknown if a.startswith("-")]


def _beam_temp_dirs(*outputs: str) -> set[str]:
    """The beam-temp* directories in the system temporary directory and beside each output."""
    places = {tempfile.gettempdir(), *(os.path.dirname(os.path.abspath(o)) for o in outputs)}
    return {path for place in places for path in glob.glob(os.path.join(place, "beam-temp*"))}


def matched_inputs(input_pattern: str) -> list:
    """The files (Beam FileMetadata) an --input pattern matches; FileNotFoundError if none."""
    from apache_beam.io.filesystems import FileSystems

    matched = FileSystems.match([input_pattern])[0].metadata_list
    if not matched:
        raise FileNotFoundError(f"no input file matches {input_pattern!r}")
    return matched


def default_errors_path(output: str) -> str:
    stem = output[:-len(".jsonl")] if output.endswith(".jsonl") else output
    return stem + ".errors.jsonl"
