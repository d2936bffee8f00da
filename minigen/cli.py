"""The `minigen` command: `minigen generate ...`, `minigen batch --input X --output Y` (Apache Beam),
`minigen export MODEL OUT` (SavedModel) and `minigen convert SRC DST`.

Exit codes: 0 ok, 2 bad usage (unknown flag, bad value, empty prompt), 1 runtime failure (a model
directory that cannot be loaded, a failed conversion), 130 interrupted (Ctrl-C), 141 stdout closed
early (`minigen generate ... | head -1`). Errors are one line on stderr, never a traceback.
Nothing is overwritten without --overwrite, and an output file appears only when complete.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import tempfile
import time

import minigen
from minigen import status
from minigen.status import import_tensorflow_quietly
from minigen.config import GPT2Config
from minigen.export_options import check_export_options
from minigen.generation.config import GenerationConfig
from minigen.generation.options import BOOL, BY_NAME, NOT_SUPPORTED, OPTIONS
from minigen.weights import DTYPES, LoadError, check_model_dir, load_tokenizer

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


SUBPARSERS: dict = {}  # command -> its argparse parser (filled by build_parser)


class UsageError(Exception):
    """Bad input from the command line: exit code 2."""


class Parser(argparse.ArgumentParser):
    """argparse with a one-line usage error (exit 2) that points at --help instead of the full usage,
    and no prefix matching (`--prompt` must not silently mean `--prompt-lookup`)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def add_generation_arguments(p) -> None:
    """The generate options shared by `minigen generate` and `minigen batch`: one flag per row of
    options.OPTIONS that has one. A flag left out passes nothing, so the model's own defaults
    (its generation_config.json) and then GenerationConfig's apply, as in Python."""
    for option in OPTIONS:
        if option.flag is None:
            continue
        settings = {"dest": option.name, "default": None, **option.cli}
        if option.check is BOOL:
            settings.setdefault("action", "store_true")
        elif settings.get("action") != "append":
            settings.setdefault("type", float if option.dtype == "float32" or isinstance(option.default, float)
                                else int)
        shown = settings["default"] if settings["default"] is not None else option.default
        default = "" if settings.get("action") == "store_true" or shown is None else f" (default {shown})"
        settings["help"] = flag_spelling(option.doc) + default
        p.add_argument(option.flag, **settings)
    p.add_argument("--dtype", default=None, choices=DTYPES,
                   help="what the weights are held and multiplied in (default: the file's own, int8 for a file "
                        "converted with --dtype int8, else float32)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="minigen", description="XLA-compiled GPT-2 text generation.")
    parser.add_argument("--version", action="version", version=f"minigen {minigen.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    g = SUBPARSERS["generate"] = sub.add_parser("generate", help="continue prompts", description=(
        "Continue one prompt (argument), or one prompt per line from --input FILE or stdin."))
    g.add_argument("prompt", nargs="?", help="the prompt; omit to read prompts from --input or stdin")
    g.add_argument("--model", default=None,
                   help="a minigen model directory (made by `minigen convert`) or a shipped model's name; "
                        "default: the shipped gutenberg-6l")
    g.add_argument("--input", help="file with one prompt per line")
    g.add_argument("--output", help="write one JSON line per prompt here (in input order) instead of text on stdout; "
                                    "the file appears only once every prompt is done")
    g.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    g.add_argument("--format", choices=("text", "jsonl"), default="text",
                   help="stdout: 'text' prints prompt + continuation, with a rule line between results "
                        "(a continuation may hold newlines); 'jsonl' prints one JSON object per result, "
                        "as --output writes (default text)")
    g.add_argument("--batch-size", type=int, default=8,
                   help="prompts decoded together (default 8): the request engine's slots, or prompts per "
                        "generate call for options the engine does not take (num_beams, penalty_alpha, ...)")
    add_generation_arguments(g)
    g.add_argument("--assistant-model", default=None,
                   help="speculative decoding with this draft model (same tokenizer), e.g. gutenberg-2l")
    g.add_argument("--stream", action="store_true",
                   help="print the continuation as it is generated (one prompt; greedy or sampling)")
    g.add_argument("--verbose", action="store_true", help="report compile time vs generation time and tokens/s")

    b = SUBPARSERS["batch"] = sub.add_parser("batch", help="generate for a JSONL file of prompts with an Apache Beam pipeline", description=(
        "Run prompts from --input (JSONL: {\"prompt\": ..., \"id\": ...} or a JSON string per line; a file "
        "pattern is fine) through RunInference and write one JSON line per prompt to --output, and one error "
        "record per unusable line to --errors. Needs `pip install \"minigen[beam]\"`. Any other --flag is "
        "passed to Beam as a pipeline option (e.g. --runner=DataflowRunner --project=...); default DirectRunner."))
    b.add_argument("--input", required=True, help="JSONL file (or file pattern) of prompts")
    b.add_argument("--output", required=True, help="JSONL file to write the results to")
    b.add_argument("--errors", default=None, help="JSONL file for error records (default: OUTPUT with .errors.jsonl)")
    b.add_argument("--model", default=None, help="a minigen model directory or a shipped model's name")
    b.add_argument("--rows", type=int, default=8, help="prompts per generate call on a worker (default 8)")
    b.add_argument("--overwrite", action="store_true", help="replace existing output files")
    add_generation_arguments(b)
    BATCH_FLAGS[:] = [o for action in b._actions for o in action.option_strings if o.startswith("--")]

    e = SUBPARSERS["export"] = sub.add_parser("export", help="write a TensorFlow SavedModel of the whole compiled generate (TF Serving)")
    e.add_argument("model", help="a minigen model directory or a shipped model's name")
    e.add_argument("out", help="SavedModel directory to create")
    e.add_argument("--batch-size", default="1", help="rows per request, or 'none' for any (greedy/sample only); default 1")
    e.add_argument("--bucket", type=int, default=64, help="prompt width: inputs are left-padded to it (default 64)")
    e.add_argument("--max-new-tokens", type=int, default=64, help="tokens generated per row (default 64)")
    e.add_argument("--strategy", default="greedy",
                   help="comma-separated signatures to export: greedy, sample, beam, contrastive (default greedy; "
                        "the first is also serving_default)")
    e.add_argument("--num-beams", type=int, default=4, help="beams of the beam signature (default 4)")
    e.add_argument("--top-k", type=int, default=4, help="candidates per step of the contrastive signature (default 4)")

    c = SUBPARSERS["convert"] = sub.add_parser("convert", help="convert a Hugging Face GPT-2 directory (same as `python -m weights_tools convert`)")
    from weights_tools.__main__ import add_convert_arguments

    add_convert_arguments(c)
    return parser


def decode_lines(raw_lines, source: str) -> list[str]:
    """Lines of bytes as text, or UsageError naming the first line that is not UTF-8."""
    lines = []
    for number, raw in enumerate(raw_lines, 1):
        try:
            lines.append(raw.decode("utf-8").rstrip("\r\n"))
        except UnicodeDecodeError as e:
            raise UsageError(f"{source}: line {number} is not UTF-8 text (byte {raw[e.start]:#04x} at column "
                             f"{e.start + 1}); save the file as UTF-8") from None
    return lines


def read_prompts(args) -> list[str]:
    if args.prompt is not None:
        if args.input:
            raise UsageError("give a prompt argument or --input, not both")
        prompts = [args.prompt]
    elif args.input:
        try:
            with open(args.input, "rb") as f:
                prompts = decode_lines(f, f"--input {args.input}")
        except OSError as e:
            raise UsageError(f"--input: cannot read {args.input!r}: {e.strerror}") from None
    elif not sys.stdin.isatty():
        prompts = decode_lines(sys.stdin.buffer, "stdin")
    else:
        raise UsageError("no prompt: pass one as an argument, or use --input FILE, or pipe prompts on stdin")
    while prompts and prompts[-1] == "" and len(prompts) > 1:  # a trailing newline is not a prompt
        prompts.pop()
    for i, p in enumerate(prompts):
        if not p.strip():
            where = "the prompt" if len(prompts) == 1 else f"prompt {i + 1} (line {i + 1})"
            raise UsageError(f"{where} is empty")
        try:
            p.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate, from a command-line argument in a non-UTF-8 locale
            raise UsageError(f"prompt {i + 1} is not valid Unicode text (a lone surrogate)") from None
    return prompts


def check_output_path(output: str | None, overwrite: bool, inputs: list[str] = ()) -> None:
    """UsageError unless `output` may be written: it must not be an input, a directory, or (without
    --overwrite) an existing file, and its directory must exist."""
    if output is None:
        return
    for path in inputs:
        if path and os.path.exists(path) and os.path.exists(output) and os.path.samefile(path, output):
            raise UsageError(f"--output {output} is the input file {path}: writing it would destroy the prompts")
    if os.path.isdir(output):
        raise UsageError(f"--output {output} is a directory; give a file path")
    if os.path.exists(output) and not overwrite:
        raise UsageError(f"{output} exists; choose another path or pass --overwrite")
    parent = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(parent):
        raise UsageError(f"--output {output}: directory {parent} does not exist")


def check_prompt_lengths(prompts: list[str], tokenizer, max_new_tokens: int, n_positions: int) -> None:
    """UsageError naming the first prompt (by line) too long for the model, before anything runs."""
    _, mask = tokenizer.encode_batch(prompts)
    for i, n in enumerate(mask.sum(axis=1).tolist()):
        if n + max_new_tokens > n_positions:
            raise UsageError(f"prompt {i + 1} (line {i + 1}) has {n} tokens; with --max-new-tokens {max_new_tokens} "
                             f"that exceeds the model's n_positions ({n_positions})")


class AtomicOutput:
    """A JSONL output written to a temporary file beside it and renamed into place when complete.

    If the run stops early, the finished lines stay in a `.partial` file (named in the error) and
    the output path itself is never created or replaced.
    """

    def __init__(self, path: str):
        self.path = path
        fd, self.tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".partial",
                                        dir=os.path.dirname(os.path.abspath(path)))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp, 0o666 & ~umask)  # mkstemp makes 0600; an output gets what a new file would
        self.file = os.fdopen(fd, "w", encoding="utf-8")
        self.lines = 0

    def write(self, record: dict) -> None:
        self.file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.file.flush()
        self.lines += 1

    def commit(self) -> None:
        self.file.close()
        os.replace(self.tmp, self.path)

    def abandon(self) -> str | None:
        """Keep finished lines as PATH.partial (or the temporary name if that exists); returns where, or None."""
        self.file.close()
        if not self.lines:
            os.unlink(self.tmp)
            return None
        kept = self.path + ".partial"
        if os.path.lexists(kept):
            return self.tmp
        os.rename(self.tmp, kept)
        return kept


_progress: status.Progress | None = None  # the running command's progress line, if any


def say(message: str) -> None:
    """One line on stderr, on a line of its own even if a progress bar was interrupted."""
    if _progress is not None:
        _progress.close_line()
    print(message, file=sys.stderr)


def generation_options(args) -> dict:
    """`generate` options from the flags given (see add_generation_arguments), checked by
    GenerationConfig.check like every other caller's (UsageError naming the bad flag)."""
    options = {o.name: getattr(args, o.name) for o in OPTIONS
               if o.flag is not None and getattr(args, o.name, None) is not None}
    # `batch` honours max_time by streaming each generate call (pipeline.MinigenModelHandler)
    streaming = getattr(args, "stream", False) or (args.command == "batch" and args.max_time is not None)
    try:
        GenerationConfig.from_options(**options).check(
            None, streaming=streaming, assistant=getattr(args, "assistant_model", None) is not None)
    except ValueError as e:
        raise UsageError(flag_spelling(str(e))) from None
    return options


# generate options spelled as the command's flags, for messages that come from the Python checks
FLAGS = {**{o.name: o.flag for o in OPTIONS if o.flag is not None}, "assistant_model": "--assistant-model"}


def flag_spelling(message: str) -> str:
    """A check's message (written with generate's option names) in the command's terms: option names
    become flags, `do_sample=True` becomes `--do-sample`, "leave it None" becomes "leave it unset"."""
    import re

    for name, flag in FLAGS.items():
        message = re.sub(rf"\b{name}=True\b", flag, message)
        message = re.sub(rf"\b{name}=(False|None)\b", f"no {flag}", message)
        message = re.sub(rf"\b{name}=", f"{flag} ", message)
        message = re.sub(rf"(?<![-\w]){name}\b", flag, message)
    return message.replace("leave it None", "leave it unset").replace("leave it at None", "leave it unset")


def run_generate(args) -> None:
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    options = generation_options(args)
    if args.stream and args.output:
        raise UsageError("--stream prints to stdout; it does not combine with --output")
    if args.stream and args.format != "text":
        raise UsageError("--stream prints text as it comes; it does not combine with --format jsonl")
    check_output_path(args.output, args.overwrite, [args.input])
    prompts = read_prompts(args)
    if args.stream and (len(prompts) != 1 or options.get("num_return_sequences", 1) != 1):
        raise UsageError("--stream prints one continuation of one prompt (--num-return-sequences 1)")
    if args.verbose:
        log_to_stderr("minigen: ")
    import_tensorflow_quietly()
    lm = minigen.load(args.model, dtype=args.dtype)
    if lm.tokenizer is None:
        raise minigen.LoadError(f"{args.model!r} has no tokenizer.json (or vocab.json + merges.txt)")
    check_prompt_lengths(prompts, lm.tokenizer, args.max_new_tokens, lm.config.n_positions)
    if args.assistant_model is not None:
        options["assistant_model"] = minigen.load(args.assistant_model, dtype=args.dtype)

    if args.stream:
        sys.stdout.write(prompts[0])
        pieces, began = lm.stream(prompts[0], **options), time.perf_counter()
        try:
            while True:
                try:
                    piece = next(pieces)
                except StopIteration as stop:
                    reason = stop.value
                    break
                sys.stdout.write(piece)
                sys.stdout.flush()
        except ValueError as e:
            raise UsageError(flag_spelling(str(e))) from None
        sys.stdout.write("\n")
        if reason == "max_time":
            sys.stdout.flush()
            say(f"minigen: stopped by --max-time {args.max_time:g} after {time.perf_counter() - began:.1f} s "
                "(the continuation is cut short)")
        return

    out = AtomicOutput(args.output) if args.output else None
    try:
        generate_all(lm, prompts, options, args, out)
    except BaseException as e:
        if out is not None:
            kept = out.abandon()
            if kept and isinstance(e, KeyboardInterrupt):
                raise Interrupted(f"{out.lines} of {len(prompts)} prompts finished; their lines are in {kept} "
                                  f"({args.output} was not written)") from None
        raise
    if out is not None:
        out.commit()


def write_result(prompt: str, texts: list[str], args, out, printed: int) -> int:
    """One prompt's record to `out`, or its text / JSON line to stdout; returns results printed so far."""
    record = {"prompt": prompt, "text": texts[0] if len(texts) == 1 else texts}
    if out:
        out.write(record)
    elif args.format == "jsonl":
        print(json.dumps(record, ensure_ascii=False), flush=True)
    else:
        for text in texts:
            if printed:
                print(RULE)
            print(prompt + text, flush=True)
            printed += 1
    return printed


def generate_all(lm, prompts: list[str], options: dict, args, out) -> None:
    """Continue `prompts`: through the request engine (--batch-size slots) when it takes the options,
    else in batches of generate calls; records in input order to `out` (or text to stdout)."""
    from minigen import engine as engines  # noqa: PLC0415 - imports TensorFlow

    if "assistant_model" not in options and not engines.unsupported(lm, options):
        return generate_with_engine(lm, prompts, options, args, out)
    generate_in_batches(lm, prompts, options, args, out)


def generate_with_engine(lm, prompts: list[str], options: dict, args, out) -> None:
    """Every prompt a request of one engine of --batch-size slots; each record written as soon as it
    and every prompt before it have finished (input order)."""
    global _progress
    _progress = status.Progress(len(prompts)) if len(prompts) > args.batch_size else None
    from minigen import engine as engines  # noqa: PLC0415 - imports TensorFlow

    requests = [{"prompt": prompt, **options} for prompt in prompts]
    try:  # checked first: the engine's width is the longest request's
        checked = [engines.check_request(lm, r, i, lm.config.n_positions) for i, r in enumerate(requests)]
        engine = lm.engine(slots=args.batch_size,
                           max_length=max(2, max(len(c.prompt_ids) + c.cfg.max_new_tokens for c in checked)))
        began, traces = time.perf_counter(), lm.trace_count
        for c in checked:  # checked and tokenised once, above
            engine.enqueue(c)
    except ValueError as e:
        raise UsageError(flag_spelling(str(e).replace("request ", "prompt ", 1))) from None
    done, written, printed, tokens = {}, 0, 0, 0
    for result in engine:
        done[result.request_id] = result.text
        tokens += len(result.new_tokens)
        while written in done:
            printed = write_result(prompts[written], [done.pop(written)], args, out, printed)
            written += 1
        if _progress is not None:
            _progress.update(written)
    if args.verbose:
        took = time.perf_counter() - began
        say(f"minigen: {len(prompts)} prompts over {args.batch_size} slots of the request engine in {took:.2f} s, "
            f"{tokens / took:.1f} new tok/s ({lm.trace_count - traces} compiles included)")


def generate_in_batches(lm, prompts: list[str], options: dict, args, out) -> None:
    """Continue `prompts` in batches of generate calls, writing each batch's records to `out` (or stdout)."""
    global _progress
    _progress = status.Progress(len(prompts)) if len(prompts) > args.batch_size else None
    printed = 0
    timing = {"compiling": 0.0, "steady": 0.0, "steady_tokens": 0, "calls": 0}
    for start in range(0, len(prompts), args.batch_size):
        batch = prompts[start:start + args.batch_size]
        traces, began = lm.trace_count, time.perf_counter()
        try:
            texts = lm.generate_text(batch, **options)
        except ValueError as e:
            raise UsageError(flag_spelling(str(e))) from None
        took = time.perf_counter() - began
        per = len(texts) // len(batch)  # continuations per prompt (num_return_sequences, the model's default too)
        timing["calls"] += 1
        if lm.trace_count != traces:
            timing["compiling"] += took
        else:
            timing["steady"] += took
            timing["steady_tokens"] += len(batch) * per * args.max_new_tokens
        for i, prompt in enumerate(batch):
            printed = write_result(prompt, texts[i * per:(i + 1) * per], args, out, printed)
        if _progress is not None:
            _progress.update(min(start + args.batch_size, len(prompts)))
    if args.verbose:
        steady = (f"{timing['steady_tokens'] / timing['steady']:.1f} tok/s over the calls that compiled nothing "
                  f"({timing['steady']:.2f} s)") if timing["steady"] else "every call compiled, so no steady speed"
        say(f"minigen: {timing['calls']} generate call{'s' if timing['calls'] != 1 else ''}: "
            f"{timing['compiling']:.2f} s in calls that compiled (compile + their run); {steady}")


RULE = "─" * 40  # between results in --format text: continuations may contain newlines of their own


class Interrupted(Exception):
    """Ctrl-C: exit code 130 with one line saying what was kept."""


class RuntimeFailure(Exception):
    """A failure at run time that is not the user's input: exit code 1, one line."""


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


BATCH_FLAGS: list[str] = []  # minigen batch's own flags, filled by build_parser (for "did you mean")


def unknown_flag(flag: str, flags: list[str], elsewhere: str = "", given: str = "") -> str:
    """The message for a flag the command does not know: a generate option of transformers' that
    minigen lacks says so (and what to do instead); a typo gets the closest of `flags`. given: the
    unrecognized arguments as typed, if they are to be shown."""
    import difflib

    name = flag.lstrip("-").replace("-", "_")
    if name in NOT_SUPPORTED:
        return f"{flag} (transformers' {name}) is not supported: {NOT_SUPPORTED[name]}"
    if name in BY_NAME:
        return f"{flag}: {name} is an option of Python's model.generate (the command writes text)"
    close = difflib.get_close_matches(flag, flags, n=1, cutoff=0.75)
    head = f"unrecognized arguments: {given}" if given else f"unrecognized option {flag}"
    return head + (f"; did you mean {close[0]}?" if close else elsewhere)


def check_pipeline_args(pipeline_args: list[str], unknown: list[str]) -> None:
    """UsageError for an option that neither minigen batch nor Beam knows (a typo would otherwise be
    passed to Beam and silently ignored), suggesting the closest of minigen's own flags."""
    for arg in unknown:
        raise UsageError(unknown_flag(arg.split("=", 1)[0], BATCH_FLAGS,
                                      " (neither a minigen batch flag nor a Beam pipeline option)"))


def run_batch(args, pipeline_args: list[str]) -> None:
    options = generation_options(args)
    if args.rows < 1:
        raise UsageError(f"--rows must be >= 1, got {args.rows}")
    logging.getLogger().setLevel(logging.ERROR)  # Beam's import-time and runner warnings are not ours
    # nor its tracebacks: a failure is reported here in one line (Beam logs a worker's error at ERROR)
    logging.getLogger("apache_beam").setLevel(logging.CRITICAL)
    log_to_stderr("minigen batch: ")  # progress: one line per batch a worker finishes
    try:
        from minigen import pipeline  # needs the optional apache-beam
    except ImportError as e:
        raise UsageError(f"minigen batch needs Apache Beam ({e}); install it with: pip install \"minigen[beam]\"") from None
    check_pipeline_args(pipeline_args, pipeline.unknown_pipeline_options(pipeline_args))
    errors = args.errors or pipeline.default_errors_path(args.output)
    if os.path.abspath(errors) == os.path.abspath(args.output):
        raise UsageError("--errors must differ from --output")
    try:
        inputs = [m.path for m in pipeline.matched_inputs(args.input)]
    except FileNotFoundError as e:
        raise UsageError(str(e)) from None
    for path in (args.output, errors):
        check_output_path(path, args.overwrite, inputs)

    model_dir = check_model_dir(args.model)  # a bad --model fails here, before a pipeline starts
    if not any(os.path.isfile(os.path.join(model_dir, f)) for f in ("tokenizer.json", "vocab.json")):
        raise LoadError(f"{model_dir!r} has no tokenizer.json (or vocab.json + merges.txt)")
    try:  # a corrupt tokenizer fails here too, not inside a worker
        load_tokenizer(model_dir, GPT2Config.from_json_file(os.path.join(model_dir, "config.json")))
    except ValueError as e:
        raise LoadError(str(e)) from None
    import_tensorflow_quietly()  # the DirectRunner's workers run in this process
    started = time.perf_counter()
    print(f"minigen batch: {args.input} -> {args.output} (errors: {errors}); pipeline options: "
          f"{' '.join(pipeline_args) or 'none (DirectRunner)'}", file=sys.stderr, flush=True)
    try:
        counts = pipeline.run_pipeline(args.input, args.output, errors, model=args.model, rows=args.rows,
                                           dtype=args.dtype, pipeline_args=pipeline_args, **options)
    except FileNotFoundError as e:
        raise UsageError(str(e)) from None
    except KeyboardInterrupt:
        raise Interrupted(f"{pipeline.GENERATED_HERE} prompts had been generated in this process, but Beam writes "
                          f"its outputs only when the pipeline completes: {args.output} and {errors} were not "
                          "written (their temporary files were removed)") from None
    except Exception as e:  # noqa: BLE001 - Beam wraps a worker's failure (often our own error) in its own
        raise RuntimeFailure(f"the pipeline failed: {type(e).__name__}: {str(e).strip().splitlines()[-1][:300]}") \
            from None
    print(f"minigen batch: {plural(counts['prompts_generated'], 'prompt')} generated, "
          f"{counts['invalid_prompts']} invalid (see {errors}), {plural(counts['compiles'], 'compile')}, "
          f"{time.perf_counter() - started:.1f} s", file=sys.stderr)


def run_export(args) -> None:
    if args.batch_size.lower() == "none":
        batch = None
    else:
        try:
            batch = int(args.batch_size)
        except ValueError:
            raise UsageError(f"--batch-size must be an int >= 1 or 'none', got {args.batch_size!r}") from None
    strategies = [s.strip() for s in args.strategy.split(",")]
    model_dir = check_model_dir(args.model)  # every flag and the model directory are checked before loading
    try:
        config = GPT2Config.from_json_file(os.path.join(model_dir, "config.json"))
    except ValueError as e:
        raise LoadError(f"{model_dir}: {e}") from None
    options = dict(batch_size=batch, bucket=args.bucket, max_new_tokens=args.max_new_tokens, strategies=strategies,
                   num_beams=args.num_beams, top_k=args.top_k)
    try:
        check_export_options(args.out, config=config, **options)
    except (ValueError, FileExistsError) as e:
        message = flag_spelling(str(e))
        raise UsageError("--strategy: " + message if message.startswith("strategies") else message) from None
    import_tensorflow_quietly()
    from minigen.export import export  # loads TensorFlow: only once the arguments are checked

    lm = minigen.load(args.model)
    try:
        export(lm, args.out, **options)
    except (ValueError, FileExistsError) as e:
        raise UsageError(str(e)) from None
    print(f"wrote {args.out} (signatures: {args.strategy}; inspect with `saved_model_cli show --dir {args.out} --all`)")


def main(argv=None) -> int:
    try:
        return run(argv)
    except KeyboardInterrupt:
        say("minigen: interrupted")
        return 130
    except BrokenPipeError:
        # the reader of stdout went away (`| head -1`): stop quietly, as a command killed by SIGPIPE would
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141


_handlers: list[logging.Handler] = []  # what log_to_stderr attached during this command


def log_to_stderr(prefix: str) -> None:
    """Show the `minigen` logger's INFO lines on stderr for the rest of this command."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(prefix + "%(message)s"))
    logger = logging.getLogger("minigen")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # not again through a root handler (Beam configures one)
    _handlers.append(handler)


def run(argv) -> int:
    try:
        return run_command(argv)
    finally:  # main() may be called again in the same process (tests, notebooks)
        status.ANNOUNCE_TO_FILES = False
        logger = logging.getLogger("minigen")
        while _handlers:
            logger.removeHandler(_handlers.pop())
        logger.setLevel(logging.NOTSET)
        logger.propagate = True


def run_command(argv) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "batch":
        flags = [o for action in SUBPARSERS[args.command]._actions for o in action.option_strings]
        flag = next((e.split("=", 1)[0] for e in extra if e.startswith("-")), None)
        SUBPARSERS[args.command].error(unknown_flag(flag, flags, given=" ".join(extra)) if flag else
                                       f"unrecognized arguments: {' '.join(extra)}")
    status.ANNOUNCE_TO_FILES = True  # a command is never silent through a long compile
    # TensorFlow (3-9 s to import) is imported by each command only after its arguments are checked
    from weights_tools.hf_checkpoint import CheckpointError

    try:
        if args.command == "convert":
            from weights_tools.__main__ import run_convert

            if args.verify:
                import_tensorflow_quietly()
            run_convert(args)
        elif args.command == "export":
            run_export(args)
        elif args.command == "batch":
            run_batch(args, extra)
        else:
            run_generate(args)
    except UsageError as e:
        say(f"minigen: error: {e}")
        return 2
    except Interrupted as e:
        say(f"minigen: interrupted: {e}")
        return 130
    except BrokenPipeError:
        raise
    except (LoadError, CheckpointError, OSError, RuntimeFailure) as e:
        say(f"minigen: error: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
