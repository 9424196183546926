"""Seconds and peak memory of every quantization method, for the tiny and a ~25M-parameter model.

    .venv/bin/python bench/quantize.py [--samples 64] [--length 256] [--threads 1] [--sizes tiny,small]

Each (model, method) runs in its own `quantbias quantize` process, so peak memory (CPU: the
process's peak resident set; GPU: torch's peak allocation) belongs to that method alone.
Seconds cover loading the base, calibration and saving, not the ~9 s llmcompressor import.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from quantbias_assets.partitions import METHODS
from quantbias_assets.tiny_model import build_tiny_model, generated_corpus

SIZES = {
    "tiny": {},
    # ~25.7M parameters: 7 layers x 3.4M + 2 x 1M embeddings
    "small": {"hidden": 512, "intermediate": 1536, "layers": 7, "heads": 8, "head_dim": 64},
}


def parameter_count(folder: Path) -> int:
    from safetensors import safe_open

    total = 0
    for path in folder.glob("*.safetensors"):
        with safe_open(path, "pt") as handle:
            for name in handle.keys():  # noqa: SIM118 - safetensors handles are not mappings
                total += _numel(handle.get_slice(name).get_shape())
    return total


def _numel(shape: list[int]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def run_one(base: Path, method: str, out: Path, calibration: Path, args: argparse.Namespace) -> dict:
    command = [
        sys.executable,
        "-m",
        "quantbias_assets.cli",
        "quantize",
        "--model",
        str(base),
        "--method",
        method,
        "--out",
        str(out),
        "--calibration",
        str(calibration),
        "--calibration-samples",
        str(args.samples),
        "--calibration-length",
        str(args.length),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TQDM_DISABLE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{method}: quantize failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout[done.stdout.index("{") :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=64, help="calibration samples")
    parser.add_argument("--length", type=int, default=256, help="tokens per calibration sample")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sizes", default="tiny,small")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        calibration = root / "calibration.txt"
        # long lines so samples reach --length tokens
        corpus = generated_corpus(seed=3, n_sentences=args.samples * 40)
        calibration.write_text("\n".join(" ".join(corpus[i : i + 40]) for i in range(0, len(corpus), 40)) + "\n")
        print(f"calibration: {args.samples} samples x up to {args.length} tokens; torch threads {args.threads}")
        print("| model | params | method | seconds | peak memory (MiB) | size (MiB) | compression |")
        print("|---|---|---|---|---|---|---|")
        for size in args.sizes.split(","):
            base = build_tiny_model(root / size / "base", seed=0, **SIZES[size])
            params = parameter_count(base)
            for method in METHODS:
                result = run_one(base, method, root / size / method, calibration, args)
                seconds = f"{result['seconds']:.2f}" if result["seconds"] is not None else "-"
                peak = f"{result['peak_memory_bytes'] / 2**20:.0f}" if result["peak_memory_bytes"] else "-"
                print(
                    f"| {size} | {params / 1e6:.2f}M | {method} | {seconds} | {peak} | "
                    f"{result['size_bytes'] / 2**20:.2f} | {result['compression_ratio']:.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
