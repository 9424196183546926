"""The lake as a Dagster resource: one root URI (local folder or object store) plus its options."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import dagster as dg
import polars as pl
from pydantic import Field

from quantbias_assets import lake, settings


class LakeResource(dg.ConfigurableResource):
    """Delta tables under `root`; each method delegates to `quantbias_assets.lake`."""

    root: str = Field(default_factory=settings.lake_root, description="local folder or s3:// gs:// az:// URI")
    storage_options: dict[str, str] = Field(
        default_factory=dict, description="object-store credentials and settings for deltalake"
    )

    def uri(self, *key: str) -> str:
        return lake.table_uri(self.root, *key)

    def exists(self, uri: str) -> bool:
        return lake.table_exists(uri, self.storage_options)

    def write_table(self, df: pl.DataFrame, uri: str, *, partition_by: Sequence[str] = ()) -> None:
        lake.write_table(df, uri, partition_by=partition_by, storage_options=self.storage_options)

    def replace_partition(self, df: pl.DataFrame, uri: str, *, model: str, method: str) -> None:
        lake.replace_partition(df, uri, model=model, method=method, storage_options=self.storage_options)

    def replace_rows(self, df: pl.DataFrame, uri: str, where: Mapping[str, str]) -> None:
        lake.replace_rows(df, uri, where, storage_options=self.storage_options)

    def append_chunk(self, df: pl.DataFrame, uri: str, *, partition_by: Sequence[str] = lake.PARTITION_COLUMNS) -> None:
        lake.append_chunk(df, uri, partition_by=partition_by, storage_options=self.storage_options)

    def insert_absent(self, df: pl.DataFrame, uri: str, *, partition: Mapping[str, str], key: Sequence[str]) -> int:
        return lake.insert_absent(df, uri, partition=partition, key=key, storage_options=self.storage_options)

    def delete_where(self, uri: str, predicate: str) -> int:
        return lake.delete_where(uri, predicate, storage_options=self.storage_options)

    def scan(self, uri: str, *, filters: Mapping[str, object] | None = None) -> pl.LazyFrame:
        return lake.scan(uri, filters=filters, storage_options=self.storage_options)

    def read(
        self,
        uri: str,
        *,
        filters: Mapping[str, object] | None = None,
        columns: Sequence[str] | None = None,
    ) -> pl.DataFrame:
        return lake.read(uri, filters=filters, columns=columns, storage_options=self.storage_options)
