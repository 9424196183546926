"""The `quantbias` command: demo, datasets, models, quantize, score, tiny-model.

Each command group is registered by its own function below; heavy imports (torch,
transformers, dagster) happen inside the command, so `quantbias --help` is instant.
"""

from __future__ import annotations

import argparse
import sys


def register_datasets(sub: argparse._SubParsersAction) -> None:
    """`quantbias datasets list|check|fetch` (foundation issue)."""


def register_models(sub: argparse._SubParsersAction) -> None:
    """`quantbias models list|add` and `quantbias quantize` (quantization issue)."""


def register_inference(sub: argparse._SubParsersAction) -> None:
    """`quantbias tiny-model` and `quantbias score` (inference issue)."""


def register_demo(sub: argparse._SubParsersAction) -> None:
    """`quantbias demo` (orchestration issue)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quantbias", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for register in (register_datasets, register_models, register_inference, register_demo):
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
