"""Dataset assets: the raw files as observable sources, and the canonical question tables.

`dataset_files/<dataset>`: observed; its data version is the content hash of the dataset's files
(an absent file counts as "absent"), so editing, adding or removing a file makes the question
table stale. An observation re-hashes only the files whose size or modification time changed
since the previous one (recorded in its metadata), so the schedule costs a few `stat` calls.
`questions/<dataset>`: validates the files and writes `questions/<dataset>` to the lake; its data
version is the table's content, so rebuilding identical questions changes nothing downstream. A
dataset with invalid records fails alone, with every error line in the failure.
"""

import hashlib
from collections.abc import Mapping
from pathlib import Path

import dagster as dg
import polars as pl

from quantbias_assets import tables
from quantbias_assets.assets.common import location_metadata
from quantbias_assets.assets.table_metadata import column_schema, markdown_preview
from quantbias_assets.catalog.datasets import (
    DATASETS,
    DatasetLoad,
    DatasetSpec,
    files_content_hash,
    load_dataset,
)
from quantbias_assets.hashing import file_sha256
from resources.dataset_files import DatasetFilesResource
from resources.lake import LakeResource

GROUP_NAME = "datasets"
QUESTIONS_CODE_VERSION = "questions-v1"
PREVIEW_ROWS = 5
PREVIEW_COLUMNS = {
    "closed": ("idx", "axis", "group", "prompt", "choices", "choice_labels"),
    "open": ("idx", "axis", "group", "prompt", "turns"),
}


def dataset_files_key(name: str) -> dg.AssetKey:
    return dg.AssetKey(tables.dataset_files(name))


def questions_key(name: str) -> dg.AssetKey:
    return dg.AssetKey(tables.questions(name))


def table_content_hash(frame: pl.DataFrame) -> str:
    """sha256 of the table's rows as JSON lines: the same questions give the same version."""
    return hashlib.sha256(frame.write_ndjson().encode()).hexdigest()


FILE_STATS = "files"  # observation metadata: {relative path: [size, mtime_ns, sha256]}


class StatCachedHasher:
    """`file_sha256`, but a file whose (size, mtime) equal those recorded by the previous
    observation keeps its recorded hash. Collects what the next observation will reuse."""

    def __init__(self, data_dir: Path, previous: Mapping[str, object]) -> None:
        self.data_dir = data_dir
        self.previous = previous
        self.stats: dict[str, list] = {}
        self.hashed: list[str] = []

    def __call__(self, path: Path) -> str:
        relative = path.relative_to(self.data_dir).as_posix()
        stat = path.stat()
        known = self.previous.get(relative)
        if isinstance(known, list) and len(known) == 3 and known[:2] == [stat.st_size, stat.st_mtime_ns]:
            digest = str(known[2])
        else:
            digest = file_sha256(path)
            self.hashed.append(relative)
        self.stats[relative] = [stat.st_size, stat.st_mtime_ns, digest]
        return digest


def previous_file_stats(context: dg.OpExecutionContext, key: dg.AssetKey, data_dir: Path) -> Mapping[str, object]:
    """The file stats of the latest observation of `key`, if it looked at the same folder."""
    records = context.instance.fetch_observations(key, limit=1).records
    observation = records[0].asset_observation if records else None
    if observation is None:
        return {}
    metadata = observation.metadata
    if getattr(metadata.get("data_dir"), "value", None) != str(data_dir):
        return {}
    stats = getattr(metadata.get(FILE_STATS), "value", None)
    return stats if isinstance(stats, Mapping) else {}


def questions_metadata(load: DatasetLoad, source_version: str, uri: str) -> dict[str, object]:
    frame = load.frame
    rows_per_axis = pl.DataFrame({"axis": list(load.spec.axes)}).join(
        frame.group_by("axis").len(name="rows"), on="axis", how="left"
    )
    rows_per_axis = rows_per_axis.with_columns(
        pl.when(pl.col("axis").is_in(list(load.axes_absent)))
        .then(pl.lit("absent"))
        .otherwise(pl.col("rows").fill_null(0).cast(pl.String))
        .alias("rows")
    )
    preview = frame.select(PREVIEW_COLUMNS[load.spec.style]).head(PREVIEW_ROWS)
    return {
        **location_metadata(uri, frame.height),
        "dagster/column_schema": column_schema(frame),
        "rows": dg.MetadataValue.int(frame.height),
        "rows_per_axis": dg.MetadataValue.md(markdown_preview(rows_per_axis)),
        "axes_present": dg.MetadataValue.json(list(load.axes_present)),
        "axes_absent": dg.MetadataValue.json(list(load.axes_absent)),
        "style": dg.MetadataValue.text(load.spec.style),
        "source_data_version": dg.MetadataValue.text(source_version),
        "preview": dg.MetadataValue.md(markdown_preview(preview)),
    }


def build_dataset_file_asset(spec: DatasetSpec) -> dg.AssetsDefinition:
    @dg.observable_source_asset(
        key=dataset_files_key(spec.name),
        group_name=GROUP_NAME,
        description=f"The raw JSON files of {spec.name} ({spec.folder}/{spec.name}/<axis>.json).",
    )
    def observe_files(context: dg.OpExecutionContext, dataset_files: DatasetFilesResource) -> dg.ObserveResult:
        data_dir = dataset_files.path
        present = [axis for axis in spec.axes if (data_dir / spec.relative_path(axis)).is_file()]
        hasher = StatCachedHasher(data_dir, previous_file_stats(context, dataset_files_key(spec.name), data_dir))
        version = files_content_hash(spec, data_dir, file_hash_of=hasher)
        return dg.ObserveResult(
            data_version=dg.DataVersion(version),
            metadata={
                "data_dir": dg.MetadataValue.path(str(data_dir)),
                "axes_present": dg.MetadataValue.json(present),
                "axes_absent": dg.MetadataValue.json([axis for axis in spec.axes if axis not in present]),
                FILE_STATS: dg.MetadataValue.json(hasher.stats),
                "files_hashed": dg.MetadataValue.int(len(hasher.hashed)),
            },
        )

    return observe_files


def build_questions_asset(spec: DatasetSpec) -> dg.AssetsDefinition:
    @dg.asset(
        key=questions_key(spec.name),
        deps=[dataset_files_key(spec.name)],
        group_name=GROUP_NAME,
        code_version=QUESTIONS_CODE_VERSION,
        kinds={"delta", "polars"},
        description=f"{spec.name} ({spec.style}) as the canonical question table (docs/schemas.md).",
    )
    def questions(
        context: dg.AssetExecutionContext, lake: LakeResource, dataset_files: DatasetFilesResource
    ) -> dg.MaterializeResult:
        data_dir = dataset_files.path
        source_version = files_content_hash(spec, data_dir)
        load = load_dataset(spec, data_dir)
        if load.errors:
            # nothing is written: the table from the last good run stays readable
            raise dg.Failure(
                description=f"{spec.name}: {len(load.errors)} invalid record(s) in {data_dir}:\n"
                + "\n".join(load.errors),
                metadata={"errors": dg.MetadataValue.md("\n".join(f"- {line}" for line in load.errors))},
            )
        uri = lake.uri(*tables.questions(spec.name))
        lake.write_table(load.frame, uri)
        if load.axes_absent:
            context.log.info(f"{spec.name}: axes not available: {', '.join(load.axes_absent)}")
        return dg.MaterializeResult(
            metadata=questions_metadata(load, source_version, uri),
            data_version=dg.DataVersion(table_content_hash(load.frame)),
        )

    return questions


dataset_file_assets: list[dg.AssetsDefinition] = [build_dataset_file_asset(spec) for spec in DATASETS.values()]
question_assets: list[dg.AssetsDefinition] = [build_questions_asset(spec) for spec in DATASETS.values()]
# Observable sources are not picked up by a group selection: select their keys explicitly.
# Seventeen sub-second steps: one process, not one per step (each would import the code location).
observe_dataset_files_job = dg.define_asset_job(
    "observe_dataset_files",
    selection=dg.AssetSelection.assets(*(asset.key for asset in dataset_file_assets)),
    executor_def=dg.in_process_executor,
    description="Observe every dataset's files; a changed data version makes its question table stale.",
)
