"""The `minigen` command: `minigen generate ...`, `minigen batch --input X --output Y` (Apache Beam),
`minigen export MODEL OUT` (SavedModel) and `minigen convert SRC DST`.

Exit codes: 0 ok, 2 bad usage (unknown flag, bad value, empty prompt), 1 runtime failure (a model
directory that cannot be loaded, a failed conversion). Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def import_tensorflow_quietly():
    """Import TensorFlow and initialise its devices with stderr (fd 2) muted.

    TensorFlow 2.21 logs INFO lines (oneDNN, CUDA probing) from C++ before absl logging is set up,
    which TF_CPP_MIN_LOG_LEVEL does not silence; a command line tool should print only its own
    messages. Python exceptions are raised after stderr is restored, so nothing real is hidden.
    """
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow as tf

        tf.config.list_logical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class UsageError(Exception):
    """Bad input from the command line: exit code 2."""


class Parser(argparse.ArgumentParser):
    """argparse with a one-line usage error (exit 2) that points at --help instead of the full usage."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def add_generation_arguments(p) -> None:
    """The generate options shared by `minigen generate` and `minigen batch`."""
    p.add_argument("--max-new-tokens", type=int, default=32, help="tokens to generate per prompt (default 32)")
    p.add_argument("--do-sample", action="store_true", help="sample instead of greedy/beam search")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature > 0 (default 1.0)")
    p.add_argument("--top-k", type=int, default=50, help="sample among the k most likely tokens; 0 = off (default 50)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass in (0, 1]; 1 = off (default 1.0)")
    p.add_argument("--num-beams", type=int, default=1, help="beam search with this many beams (default 1: off)")
    p.add_argument("--num-return-sequences", type=int, default=1, help="continuations per prompt (default 1)")
    p.add_argument("--repetition-penalty", type=float, default=1.0, help="> 1 discourages repeats (default 1.0)")
    p.add_argument("--seed", type=int, nargs=2, metavar=("A", "B"), help="two ints: the stateless sampling seed")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                   help="weights' dtype in memory (default float32)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="minigen", description="XLA-compiled GPT-2 text generation.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    g = sub.add_parser("generate", help="continue prompts", description=(
        "Continue one prompt (argument), or one prompt per line from --input FILE or stdin."))
    g.add_argument("prompt", nargs="?", help="the prompt; omit to read prompts from --input or stdin")
    g.add_argument("--model", default=None,
                   help="a minigen model directory (made by `minigen convert`) or a shipped model's name; "
                        "default: the shipped gutenberg-6l")
    g.add_argument("--input", help="file with one prompt per line")
    g.add_argument("--output", help="write one JSON line per prompt here (in input order) instead of text on stdout")
    g.add_argument("--batch-size", type=int, default=8, help="prompts per generate call (default 8)")
    add_generation_arguments(g)
    g.add_argument("--prompt-lookup", type=int, default=None, metavar="K",
                   help="speculative decoding: K candidate tokens per step copied from the prompt/output")
    g.add_argument("--assistant-model", default=None,
                   help="speculative decoding with this draft model (same tokenizer), e.g. gutenberg-2l")
    g.add_argument("--num-assistant-tokens", type=int, default=4, help="draft tokens per step (default 4)")
    g.add_argument("--stream", action="store_true",
                   help="print the continuation as it is generated (one prompt; greedy or sampling)")
    g.add_argument("--verbose", action="store_true", help="report compile time vs generation time and tokens/s")

    b = sub.add_parser("batch", help="generate for a JSONL file of prompts with an Apache Beam pipeline", description=(
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

    e = sub.add_parser("export", help="write a TensorFlow SavedModel of the whole compiled generate (TF Serving)")
    e.add_argument("model", help="a minigen model directory or a shipped model's name")
    e.add_argument("out", help="SavedModel directory to create")
    e.add_argument("--batch-size", default="1", help="rows per request, or 'none' for any (greedy/sample only); default 1")
    e.add_argument("--bucket", type=int, default=64, help="prompt width: inputs are left-padded to it (default 64)")
    e.add_argument("--max-new-tokens", type=int, default=64, help="tokens generated per row (default 64)")
    e.add_argument("--strategy", default="greedy",
                   help="comma-separated signatures to export: greedy, sample, beam (default greedy; the first "
                        "is also serving_default)")
    e.add_argument("--num-beams", type=int, default=4, help="beams of the beam signature (default 4)")

    c = sub.add_parser("convert", help="convert a Hugging Face GPT-2 directory (same as `python -m weights_tools convert`)")
    from weights_tools.__main__ import add_convert_arguments

    add_convert_arguments(c)
    return parser


def read_prompts(args) -> list[str]:
    if args.prompt is not None:
        if args.input:
            raise UsageError("give a prompt argument or --input, not both")
        prompts = [args.prompt]
    elif args.input:
        try:
            with open(args.input, encoding="utf-8") as f:
                prompts = [line.rstrip("\n") for line in f]
        except OSError as e:
            raise UsageError(f"--input: cannot read {args.input!r}: {e.strerror}") from None
    elif not sys.stdin.isatty():
        prompts = [line.rstrip("\n") for line in sys.stdin]
    else:
        raise UsageError("no prompt: pass one as an argument, or use --input FILE, or pipe prompts on stdin")
    while prompts and prompts[-1] == "" and len(prompts) > 1:  # a trailing newline is not a prompt
        prompts.pop()
    for i, p in enumerate(prompts):
        if not p.strip():
            where = "the prompt" if len(prompts) == 1 else f"prompt {i + 1} (line {i + 1})"
            raise UsageError(f"{where} is empty")
    return prompts


def progress(done: int, total: int, started: float) -> None:
    width = 30
    filled = width * done // total
    rate = done / max(time.perf_counter() - started, 1e-9)
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} prompts, {rate:.1f} prompts/s")
    if done == total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def generation_options(args) -> dict:
    """`generate` options from the shared flags, validated (UsageError naming the bad one)."""
    from minigen.generation.config import GenerationConfig

    options = dict(max_new_tokens=args.max_new_tokens, do_sample=args.do_sample, temperature=args.temperature,
                   top_k=args.top_k, top_p=args.top_p, num_beams=args.num_beams,
                   num_return_sequences=args.num_return_sequences, repetition_penalty=args.repetition_penalty,
                   seed=tuple(args.seed) if args.seed else None)
    try:
        GenerationConfig.from_options(**options).validate(None)
    except ValueError as e:
        raise UsageError(str(e)) from None
    return options


def run_generate(args) -> None:
    import minigen

    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    options = generation_options(args)
    if args.prompt_lookup is not None:
        options["prompt_lookup_num_tokens"] = args.prompt_lookup
    if args.assistant_model is not None:
        options["num_assistant_tokens"] = args.num_assistant_tokens
    if args.stream and (args.prompt_lookup is not None or args.assistant_model is not None):
        raise UsageError("--stream does not combine with --prompt-lookup / --assistant-model")
    prompts = read_prompts(args)
    if args.verbose:
        logging.basicConfig(format="minigen: %(message)s", stream=sys.stderr)
        logging.getLogger("minigen").setLevel(logging.INFO)
    lm = minigen.load(args.model, dtype=args.dtype)
    if lm.tokenizer is None:
        raise minigen.LoadError(f"{args.model!r} has no tokenizer.json (or vocab.json + merges.txt)")
    if args.assistant_model is not None:
        options["assistant_model"] = minigen.load(args.assistant_model, dtype=args.dtype)

    if args.stream:
        if len(prompts) != 1 or args.output or args.num_return_sequences != 1:
            raise UsageError("--stream prints one continuation of one prompt (no --output, --num-return-sequences 1)")
        sys.stdout.write(prompts[0])
        try:
            for piece in lm.stream(prompts[0], **options):
                sys.stdout.write(piece)
                sys.stdout.flush()
        except ValueError as e:
            raise UsageError(str(e)) from None
        sys.stdout.write("\n")
        return

    out = open(args.output, "w", encoding="utf-8") if args.output else None  # noqa: SIM115
    started, show = time.perf_counter(), len(prompts) > args.batch_size
    try:
        for start in range(0, len(prompts), args.batch_size):
            batch = prompts[start:start + args.batch_size]
            try:
                texts = lm.generate_text(batch, **options)
            except ValueError as e:
                raise UsageError(str(e)) from None
            per = args.num_return_sequences
            for i, prompt in enumerate(batch):
                mine = texts[i * per:(i + 1) * per]
                if out:
                    out.write(json.dumps({"prompt": prompt, "text": mine[0] if per == 1 else mine}) + "\n")
                else:
                    for text in mine:
                        print(prompt + text, flush=True)
            if show:
                progress(min(start + args.batch_size, len(prompts)), len(prompts), started)
    finally:
        if out:
            out.close()


def run_batch(args, pipeline_args: list[str]) -> None:
    options = generation_options(args)
    if args.rows < 1:
        raise UsageError(f"--rows must be >= 1, got {args.rows}")
    logging.getLogger().setLevel(logging.ERROR)  # Beam's import-time and runner warnings are not ours
    logging.basicConfig(format="minigen batch: %(message)s", stream=sys.stderr)
    logging.getLogger("minigen").setLevel(logging.INFO)  # progress: one line per batch a worker finishes
    try:
        from minigen import beam as minigen_beam
    except ImportError as e:
        raise UsageError(f"minigen batch needs Apache Beam ({e}); install it with: pip install \"minigen[beam]\"") from None
    errors = args.errors or minigen_beam.default_errors_path(args.output)
    if errors == args.output:
        raise UsageError("--errors must differ from --output")
    for path in (args.output, errors):
        if os.path.exists(path) and not args.overwrite:
            raise UsageError(f"{path} exists; choose another path or pass --overwrite")
    from minigen.weights import resolve

    resolve(args.model)  # a bad --model fails here, before a pipeline starts
    started = time.perf_counter()
    print(f"minigen batch: {args.input} -> {args.output} (errors: {errors}); pipeline options: "
          f"{' '.join(pipeline_args) or 'none (DirectRunner)'}", file=sys.stderr, flush=True)
    try:
        counts = minigen_beam.run_pipeline(args.input, args.output, errors, model=args.model, rows=args.rows,
                                           dtype=args.dtype, pipeline_args=pipeline_args, **options)
    except FileNotFoundError as e:
        raise UsageError(str(e)) from None
    print(f"minigen batch: {counts['prompts_generated']} prompts generated, {counts['invalid_prompts']} invalid "
          f"(see {errors}), {counts['compiles']} compiles, {time.perf_counter() - started:.1f} s",
          file=sys.stderr)


def run_export(args) -> None:
    import minigen
    from minigen.export import export

    if args.batch_size.lower() == "none":
        batch = None
    else:
        try:
            batch = int(args.batch_size)
        except ValueError:
            raise UsageError(f"--batch-size must be an int >= 1 or 'none', got {args.batch_size!r}") from None
    lm = minigen.load(args.model)
    try:
        export(lm, args.out, batch_size=batch, bucket=args.bucket, max_new_tokens=args.max_new_tokens,
               strategies=[s.strip() for s in args.strategy.split(",")], num_beams=args.num_beams)
    except (ValueError, FileExistsError) as e:
        raise UsageError(str(e)) from None
    print(f"wrote {args.out} (signatures: {args.strategy}; inspect with `saved_model_cli show --dir {args.out} --all`)")


def main(argv=None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "batch":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    import_tensorflow_quietly()
    from minigen.weights import LoadError
    from weights_tools.hf_checkpoint import CheckpointError

    try:
        if args.command == "convert":
            from weights_tools.__main__ import run_convert

            run_convert(args)
        elif args.command == "export":
            run_export(args)
        elif args.command == "batch":
            run_batch(args, extra)
        else:
            run_generate(args)
    except UsageError as e:
        print(f"minigen: error: {e}", file=sys.stderr)
        return 2
    except (LoadError, CheckpointError, OSError) as e:
        print(f"minigen: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
