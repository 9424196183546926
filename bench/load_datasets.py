"""Time and peak memory to validate all 17 datasets and write their question tables to a temp lake.

Usage: python bench/load_datasets.py [DATA_DIR]   (default: $QUANTBIAS_DATA_DIR, else ../shared/datasets)
Target: under 20 s and 1 GB peak RSS.
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from quantbias_assets import lake
from quantbias_assets.catalog.datasets import DATASETS, load_dataset


def peak_rss_mib() -> float:
    # ru_maxrss is KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    default = os.environ.get(
        "QUANTBIAS_DATA_DIR", str(Path(__file__).resolve().parents[1].parent / "shared" / "datasets")
    )
    data_dir = Path(sys.argv[1] if len(sys.argv) > 1 else default)
    rss_before = peak_rss_mib()
    rows = 0
    errors = 0
    with tempfile.TemporaryDirectory() as root:
        started = time.perf_counter()
        for spec in DATASETS.values():
            load = load_dataset(spec, data_dir)
            errors += len(load.errors)
            lake.write_table(load.frame, lake.table_uri(root, "questions", spec.name))
            rows += load.frame.height
        seconds = time.perf_counter() - started
    print(f"datasets: {len(DATASETS)}  rows: {rows}  validation errors: {errors}")
    print(f"validate + write all: {seconds:.2f} s")
    print(f"peak RSS: {peak_rss_mib():.0f} MiB (after imports: {rss_before:.0f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
