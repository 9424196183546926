"""Cost of one chunk commit into a full partition: blind append vs insert-if-absent MERGE.

The resumable workers commit each chunk with `lake.insert_absent` (a MERGE on partition + key),
which must read the partition's keys; `lake.append_chunk` is the blind append it replaced.
Rows look like closed responses (two 64-char hashes, a 540-char text, a list column).

Usage: python bench/lake_commits.py [--partitions 4] [--partition-rows 10000] [--chunk-rows 256] [--repeats 8]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time

import polars as pl

from quantbias_assets import lake

KEY = ("question_hash", "config_hash")


def response_rows(model: str, count: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "model": [model] * count,
            "method": ["none"] * count,
            "idx": [f"BBQ/age/{i}" for i in range(count)],
            "question_hash": [f"{random.getrandbits(256):064x}" for _ in range(count)],
            "config_hash": ["c" * 64] * count,
            "prompt": ["lorem ipsum dolor sit amet " * 20] * count,
            "probs": [[0.2, 0.3, 0.5]] * count,
            "chosen_idx": [2] * count,
        }
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partitions", type=int, default=4, help="partitions of the table, each full")
    parser.add_argument("--partition-rows", type=int, default=10_000)
    parser.add_argument("--chunk-rows", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=8)
    args = parser.parse_args()
    seconds: dict[str, list[float]] = {"append_chunk": [], "insert_absent": []}
    with tempfile.TemporaryDirectory() as root:
        uri = lake.table_uri(root, "responses", "BBQ")
        for number in range(args.partitions):
            lake.append_chunk(response_rows(f"m{number}", args.partition_rows), uri)
        for _ in range(args.repeats):
            for how in seconds:  # alternate, so both see the same partition sizes
                chunk = response_rows("m0", args.chunk_rows)
                started = time.perf_counter()
                if how == "append_chunk":
                    lake.append_chunk(chunk, uri)
                else:
                    lake.insert_absent(chunk, uri, partition={"model": "m0", "method": "none"}, key=KEY)
                seconds[how].append(time.perf_counter() - started)
    print(
        f"one {args.chunk_rows}-row chunk into a {args.partition_rows}-row partition "
        f"({args.partitions} partitions), {args.repeats} repeats:"
    )
    for how, values in seconds.items():
        print(f"  {how:14s} median {statistics.median(values) * 1000:6.0f} ms   max {max(values) * 1000:6.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
