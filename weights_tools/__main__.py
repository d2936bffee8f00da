"""Command line: `python -m weights_tools convert SRC DST [--force] [--verify]`, `verify DST SRC`,
and `train CORPUS OUT [...]` (see weights_tools/train.py)."""

from __future__ import annotations

import argparse
import os
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m weights_tools", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    add_convert_arguments(sub.add_parser("convert", help="convert a Hugging Face GPT-2 directory to minigen's format"))
    v = sub.add_parser("verify", help="check a converted model's logits against its source checkpoint")
    v.add_argument("dst", help="the converted minigen model directory")
    v.add_argument("src", help="the Hugging Face GPT-2 directory it was converted from")
    v.add_argument("--tolerance", type=float, default=1e-3, help="max abs logit difference allowed (default 1e-3)")
    from .train import add_train_arguments

    add_train_arguments(sub.add_parser("train", help="train a small GPT-2 on a text corpus (Hugging Face format out)"))
    return parser


def add_convert_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="Hugging Face GPT-2 directory: config.json + model.safetensors (or shards + index)")
    p.add_argument("dst", help="minigen model directory to create")
    p.add_argument("--force", action="store_true",
                   help="replace DST if it is a minigen model directory (only once the new one is complete); "
                        "any other existing DST is refused")
    p.add_argument("--verify", action="store_true",
                   help="compare logits with the source before DST is put in place (a failure leaves DST as it was)")
    p.add_argument(
        "--dtype", default="float32", choices=("float32", "float16", "bfloat16", "int8"),
        help="storage dtype (default float32; int8: per-channel int8 matrices with their scales, run in int8)"
    )


def run_convert(args) -> None:
    from .convert import convert

    convert(args.src, args.dst, force=args.force, dtype=args.dtype, verify_with_source=args.verify)


def main(argv=None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    from minigen.status import import_tensorflow_quietly
    from minigen.weights import LoadError

    if args.command != "convert" or args.verify:  # these run the model: TensorFlow, without its CUDA probe noise
        import_tensorflow_quietly()

    from .hf_checkpoint import CheckpointError

    try:
        if args.command == "convert":
            run_convert(args)
        elif args.command == "train":
            from .train import train

            train(args)
        else:
            from .convert import verify

            verify(args.dst, args.src, tolerance=args.tolerance)
    except (CheckpointError, LoadError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # a read-only or full disk, a path that vanished: one line, not a traceback
        where = f" ({e.filename})" if e.filename else ""
        print(f"error: {e.strerror or e}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
