"""How long the UI waits for asset status with 10 models x 8 methods of partitions.

Builds a throwaway instance whose event log looks like a deployment after 10 models were run
with all 8 methods: every `model` x `method` partition of the checkpoint, the 17 response tables
and the 7 verdict tables materialized (reported as runless events with data versions, no model
work), the dataset files observed, every other asset materialized once. Then it loads
`definitions.py` as the webserver does (a code server process) and times the GraphQL queries the
UI sends for status: the lineage / catalog (every asset's stale status, causes and partition
counts) and the `analysis/paired_responses` page. Each query runs in a fresh request context,
as one HTTP request of the UI would.

    QUANTBIAS_DATA_DIR=../shared/datasets .venv/bin/python bench/ui_status.py [--models 10] [--repeat 3] [--home DIR]

`--home DIR` keeps the populated instance in DIR and re-uses it on the next call (filling it
takes minutes on a small machine): run the bench on two commits against the same event log.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# What the asset graph and the asset page ask for status (trimmed to the status fields of
# dagster-webserver 1.13's AssetGraphLiveQuery / AssetCatalogTableQuery / AssetStaleStatusQuery).
STATUS_QUERY = """
query AssetStatus($assetKeys: [AssetKeyInput!]) {
  assetNodes(assetKeys: $assetKeys, loadMaterializations: true) {
    id
    assetKey { path }
    staleStatus
    staleCauses { key { path } reason category dependency { path } }
    partitionStats { numMaterialized numMaterializing numPartitions numFailed }
    assetMaterializations(limit: 1) { timestamp runId }
  }
}
"""
# The asset page of one partition asks for that partition's status.
PARTITION_STATUS_QUERY = """
query PartitionStatus($assetKeys: [AssetKeyInput!], $partition: String) {
  assetNodes(assetKeys: $assetKeys) {
    id
    staleStatus(partition: $partition)
    staleCauses(partition: $partition) { key { path } reason category dependency { path } }
  }
}
"""
PAIRED_RESPONSES = ["analysis", "paired_responses"]
BIAS_TESTS = ["analysis", "bias_tests"]


def populate(instance, defs, models: int) -> tuple[int, int]:
    """Runless events for every partition of every partitioned asset; returns (partitioned
    events, unpartitioned events)."""
    import dagster as dg
    from dagster._core.definitions.data_version import DATA_VERSION_TAG

    from quantbias_assets.partitions import METHODS, model_partitions, partition_key

    nicknames = [f"bench-model-{number:02d}" for number in range(models)]
    instance.add_dynamic_partitions(model_partitions.name, nicknames)
    asset_graph = defs.resolve_asset_graph()
    partitioned = unpartitioned = 0
    for key in asset_graph.toposorted_asset_keys:  # inputs first, as runs would record them
        node = asset_graph.get(key)
        if node.is_observable:
            instance.report_runless_asset_event(dg.AssetObservation(key, tags={DATA_VERSION_TAG: "files-v1"}))
            continue
        if node.partitions_def is None:
            instance.report_runless_asset_event(dg.AssetMaterialization(key, tags={DATA_VERSION_TAG: "v1"}))
            unpartitioned += 1
            continue
        by_method = isinstance(node.partitions_def, dg.MultiPartitionsDefinition)
        for nickname in nicknames:
            for method in METHODS if by_method else (None,):
                partition = str(partition_key(nickname, method)) if by_method else nickname
                instance.report_runless_asset_event(
                    dg.AssetMaterialization(key, partition=partition, tags={DATA_VERSION_TAG: f"{partition}-v1"})
                )
                partitioned += 1
    return partitioned, unpartitioned


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3, help="timings per query (the median is printed)")
    parser.add_argument("--home", type=Path, default=None, help="keep (and re-use) the populated instance here")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)

    import dagster as dg
    from dagster_graphql.test.utils import define_out_of_process_context, execute_dagster_graphql

    import definitions

    with tempfile.TemporaryDirectory() as scratch:
        home = args.home or Path(scratch)
        home.mkdir(parents=True, exist_ok=True)
        os.environ["QUANTBIAS_HOME"] = str(home)
        with dg.DagsterInstance.local_temp(tempdir=str(home)) as instance:
            if instance.get_dynamic_partitions("model"):
                print(f"instance: re-using {home}", flush=True)
            else:
                started = time.perf_counter()
                partitioned, unpartitioned = populate(instance, definitions.defs, args.models)
                print(
                    f"instance: {args.models} models x 8 methods; {partitioned} partition materializations, "
                    f"{unpartitioned} unpartitioned, in {time.perf_counter() - started:.0f} s",
                    flush=True,
                )
            with define_out_of_process_context(str(ROOT / "definitions.py"), "defs", instance) as request:
                keys = [{"path": key.path} for key in definitions.defs.resolve_asset_graph().get_all_asset_keys()]
                one_model = instance.get_dynamic_partitions("model")[0]
                cases = {
                    "lineage/catalog: every asset's status": (STATUS_QUERY, {"assetKeys": keys}),
                    "analysis/paired_responses page": (STATUS_QUERY, {"assetKeys": [{"path": PAIRED_RESPONSES}]}),
                    "analysis/bias_tests page": (STATUS_QUERY, {"assetKeys": [{"path": BIAS_TESTS}]}),
                }
                if definitions.defs.resolve_asset_graph().get(dg.AssetKey(PAIRED_RESPONSES)).is_partitioned:
                    cases[f"analysis/paired_responses, partition {one_model}"] = (
                        PARTITION_STATUS_QUERY,
                        {"assetKeys": [{"path": PAIRED_RESPONSES}], "partition": one_model},
                    )
                for label, (query, variables) in cases.items():
                    times = []
                    for _ in range(args.repeat):
                        context = request.process_context.create_request_context()
                        started = time.perf_counter()
                        result = execute_dagster_graphql(context, query, variables)
                        times.append(time.perf_counter() - started)
                        if result.errors:
                            raise SystemExit(f"{label}: GraphQL errors: {result.errors}")
                    nodes = result.data["assetNodes"]
                    stale = sum(node["staleStatus"] == "STALE" for node in nodes)
                    print(
                        f"{label}: median {statistics.median(times):.2f} s over {args.repeat} "
                        f"(min {min(times):.2f}, max {max(times):.2f}); {len(nodes)} assets, {stale} stale",
                        flush=True,
                    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
