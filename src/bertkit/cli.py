"""The `bertkit` command: parses arguments and calls the library.

Every user error is a `BertkitError`, printed as one line on stderr with exit status 2; outputs are
written atomically, so a failed run leaves what was on disk untouched.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from bertkit.errors import BertkitError


def cmd_embed(args: argparse.Namespace) -> None:
    import numpy as np

    from bertkit.checkpoint import load_model
    from bertkit.files import atomic_write, read_lines
    from bertkit.inference import embed
    from bertkit.model import BertModel
    from bertkit.tokenizer import Tokenizer

    if not args.output.endswith(".npy"):
        raise BertkitError(f"--output {args.output}: must end in .npy", hint="e.g. --output embeddings.npy")
    texts = read_lines(args.input)
    model = load_model(args.model)
    encoder = model if isinstance(model, BertModel) else model.bert
    tokenizer = Tokenizer.from_pretrained(args.model)
    vectors = embed(encoder, tokenizer, texts, pooling=args.pooling, batch_size=args.batch_size,
                    normalize=args.normalize, max_length=args.max_seq_len, precision=args.precision,
                    show_progress=not args.quiet)
    def write(tmp):
        with open(tmp, "wb") as f:
            np.save(f, vectors)

    atomic_write(args.output, write)
    print(f"wrote {args.output}: {vectors.shape[0]} texts x {vectors.shape[1]} dims ({args.pooling} pooling)",
          file=sys.stderr)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bertkit", description="BERT end to end: pre-train, fine-tune, use.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is loaded and skipped")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("embed", help="sentence embeddings of one text per line, as a .npy array")
    p.add_argument("--model", required=True, help="model directory (HuggingFace format, with tokenizer)")
    p.add_argument("--input", required=True, help="UTF-8 text file, one text per line")
    p.add_argument("--output", required=True, help="output .npy file: float32 (n_texts, hidden)")
    p.add_argument("--pooling", choices=["mean", "cls", "max"], default="mean",
                   help="mean over non-padding tokens (sentence-transformers' default), the [CLS] vector, or max")
    p.add_argument("--normalize", action="store_true", help="scale each vector to unit length")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--max-seq-len", type=positive_int, default=None,
                   help="truncate longer texts (default: the model's max_position_embeddings)")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_embed)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        args.func(args)
    except BertkitError as e:
        print(f"bertkit {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"bertkit {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
