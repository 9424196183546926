"""The Delta lake module against real Delta tables in a temp folder."""

from __future__ import annotations

import logging
import multiprocessing
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable

from quantbias_assets import lake
from resources.lake import LakeResource


def rows(model: str, method: str, values: list[int]) -> pl.DataFrame:
    return pl.DataFrame(
        {"model": [model] * len(values), "method": [method] * len(values), "value": values},
        schema={"model": pl.String, "method": pl.String, "value": pl.Int64},
    )


def sorted_rows(df: pl.DataFrame) -> list[tuple]:
    return sorted(df.select("model", "method", "value").rows())


def test_table_uri_joins_local_and_object_store_roots() -> None:
    assert lake.table_uri("/tmp/lake", "questions", "BBQ") == "/tmp/lake/questions/BBQ"
    assert lake.table_uri("/tmp/lake/", "responses", "CEB-Adult") == "/tmp/lake/responses/CEB-Adult"
    assert lake.table_uri("s3://bucket/lake", "analysis", "paired_responses") == (
        "s3://bucket/lake/analysis/paired_responses"
    )
    assert lake.table_uri("gs://b/", "questions", "IAT") == "gs://b/questions/IAT"
    assert lake.table_uri("az://container/root", "questions", "IAT") == "az://container/root/questions/IAT"


def test_sql_literal_escapes_quotes_and_types() -> None:
    assert lake.sql_literal("it's") == "'it''s'"
    assert lake.sql_literal("qwen2.5-0.5b") == "'qwen2.5-0.5b'"
    assert lake.sql_literal(3) == "3"
    assert lake.sql_literal(True) == "true"
    assert lake.sql_literal(None) == "NULL"
    assert lake.equality_predicate({"model": "a'b", "method": "none"}) == "model = 'a''b' AND method = 'none'"
    with pytest.raises(TypeError):
        lake.sql_literal(object())


def test_write_table_overwrites_whole_table_and_schema(tmp_path: Path) -> None:
    uri = lake.table_uri(str(tmp_path), "questions", "X")
    assert not lake.table_exists(uri)
    lake.write_table(pl.DataFrame({"idx": ["a", "b"], "n": [1, 2]}), uri)
    assert lake.table_exists(uri)
    lake.write_table(pl.DataFrame({"idx": ["c"], "text": ["new column"]}), uri)
    assert lake.read(uri).rows() == [("c", "new column")]


def test_write_table_keeps_types_of_empty_frames(tmp_path: Path) -> None:
    uri = lake.table_uri(str(tmp_path), "questions", "Empty")
    schema = {"idx": pl.String, "choices": pl.List(pl.String), "target": pl.Int32}
    lake.write_table(pl.DataFrame(schema=schema), uri)
    read_back = lake.read(uri)
    assert read_back.height == 0
    assert read_back.schema == pl.Schema(schema)


def test_replace_partition_touches_only_that_partition(tmp_path: Path) -> None:
    uri = lake.table_uri(str(tmp_path), "responses", "BBQ")
    lake.replace_partition(rows("m1", "none", [1, 2]), uri, model="m1", method="none")
    lake.replace_partition(rows("m1", "rtn-w4a16", [3]), uri, model="m1", method="rtn-w4a16")
    lake.replace_partition(rows("m2", "none", [4]), uri, model="m2", method="none")
    lake.replace_partition(rows("m1", "none", [10, 11, 12]), uri, model="m1", method="none")
    assert sorted_rows(lake.read(uri)) == [
        ("m1", "none", 10),
        ("m1", "none", 11),
        ("m1", "none", 12),
        ("m1", "rtn-w4a16", 3),
        ("m2", "none", 4),
    ]
    # the table is physically partitioned by model then method
    assert (tmp_path / "responses" / "BBQ" / "model=m1" / "method=rtn-w4a16").is_dir()


def test_replace_partition_rejects_rows_of_another_partition(tmp_path: Path) -> None:
    uri = lake.table_uri(str(tmp_path), "responses", "BBQ")
    lake.replace_partition(rows("m1", "none", [1]), uri, model="m1", method="none")
    mixed = pl.concat([rows("m1", "none", [2]), rows("m2", "none", [3])])
    with pytest.raises(ValueError, match="m1/none carry other model values"):
        lake.replace_partition(mixed, uri, model="m1", method="none")
    assert sorted_rows(lake.read(uri)) == [("m1", "none", 1)]


def test_replace_rows_of_one_model_in_an_unpartitioned_table(tmp_path: Path) -> None:
    uri = lake.table_uri(str(tmp_path), "analysis", "paired_responses")
    lake.replace_rows(pl.concat([rows("m1", "none", [1]), rows("m1", "awq-w4a16", [2])]), uri, {"model": "m1"})
    lake.replace_rows(rows("m2", "none", [3]), uri, {"model": "m2"})
    lake.replace_rows(rows("m1", "rtn-w4a16", [4]), uri, {"model": "m1"})
    assert sorted_rows(lake.read(uri)) == [("m1", "rtn-w4a16", 4), ("m2", "none", 3)]
    lake.replace_rows(rows("m2", "none", []), uri, {"model": "m2"})  # no rows left for m2
    assert sorted_rows(lake.read(uri)) == [("m1", "rtn-w4a16", 4)]
    assert not (tmp_path / "analysis" / "paired_responses" / "model=m1").exists()
    with pytest.raises(ValueError, match="m1 carry other model values"):
        lake.replace_rows(rows("m2", "none", [5]), uri, {"model": "m1"})
    # a newer code version's rows carry a new column: the table gains it, null in the old rows
    lake.replace_rows(rows("m2", "none", [6]).with_columns(analysed=pl.lit(True)), uri, {"model": "m2"})
    assert lake.read(uri).sort("model").select("model", "analysed").rows() == [("m1", None), ("m2", True)]


def test_append_chunk_creates_then_appends(tmp_path: Path) -> None:
    uri = lake.table_uri(str(tmp_path), "responses", "IAT")
    lake.append_chunk(rows("m1", "none", [1]), uri)
    lake.append_chunk(rows("m1", "none", [2]), uri)
    lake.append_chunk(rows("m2", "awq-w4a16", [3]), uri)
    assert sorted_rows(lake.read(uri)) == [("m1", "none", 1), ("m1", "none", 2), ("m2", "awq-w4a16", 3)]


def test_scan_filters_and_columns(tmp_path: Path) -> None:
    uri = lake.table_uri(str(tmp_path), "responses", "IAT")
    lake.append_chunk(pl.concat([rows("m1", "none", [1, 2]), rows("m1", "rtn-w8a8", [3])]), uri)
    lake.append_chunk(rows("m2", "none", [4]), uri)
    assert lake.read(
        uri, filters={"model": "m1", "method": "none"}, columns=["value"]
    ).to_series().sort().to_list() == [1, 2]
    assert lake.scan(uri, filters={"method": "none"}).select(pl.len()).collect().item() == 3
    assert lake.read(uri, filters={"model": "absent"}).height == 0


def test_delete_where_returns_deleted_count(tmp_path: Path) -> None:
    uri = lake.table_uri(str(tmp_path), "responses", "IAT")
    lake.append_chunk(pl.concat([rows("m1", "none", [1, 2, 3]), rows("m2", "none", [4])]), uri)
    assert lake.delete_where(uri, "model = 'm1' AND value >= 2") == 2
    assert sorted_rows(lake.read(uri)) == [("m1", "none", 1), ("m2", "none", 4)]


def keyed(model: str, values: list[int], note: str) -> pl.DataFrame:
    return rows(model, "none", values).with_columns(note=pl.lit(note))


def test_insert_absent_adds_only_keys_missing_from_the_partition(tmp_path: Path) -> None:
    uri = lake.table_uri(str(tmp_path), "responses", "BBQ")
    partition = {"model": "m1", "method": "none"}
    assert lake.insert_absent(keyed("m1", [1, 2, 2], "first"), uri, partition=partition, key=["value"]) == 2
    lake.append_chunk(keyed("m2", [3], "other partition"), uri)
    # 2 is there already (kept as it was); 3 exists only in another partition, so it is absent here
    assert lake.insert_absent(keyed("m1", [2, 3], "second"), uri, partition=partition, key=["value"]) == 1
    assert lake.insert_absent(keyed("m1", [1, 3], "third"), uri, partition=partition, key=["value"]) == 0
    assert sorted(lake.read(uri).select("model", "value", "note").rows()) == [
        ("m1", 1, "first"),
        ("m1", 2, "first"),
        ("m1", 3, "second"),
        ("m2", 3, "other partition"),
    ]
    with pytest.raises(ValueError, match="m1/none carry other model values"):
        lake.insert_absent(keyed("m2", [9], "x"), uri, partition=partition, key=["value"])


def test_keep_one_row_per_key_in_one_commit(tmp_path: Path) -> None:
    uri = lake.table_uri(str(tmp_path), "responses", "BBQ")
    lake.append_chunk(keyed("m1", [1, 2, 3], "a"), uri)
    lake.append_chunk(keyed("m1", [1, 2], "b"), uri)
    lake.append_chunk(keyed("m2", [1, 1], "c"), uri)
    version = DeltaTable(uri).version()
    assert lake.keep_one_row_per_key(uri, "model = 'm1' AND value IN (1, 2)", key=["value"]) == 2
    assert DeltaTable(uri).version() == version + 1
    assert lake.keep_one_row_per_key(uri, "model = 'm1' AND value IN (1, 2)", key=["value"]) == 0
    assert DeltaTable(uri).version() == version + 1  # nothing to remove, nothing committed
    assert sorted(lake.read(uri).select("model", "value").rows()) == [
        ("m1", 1),
        ("m1", 2),
        ("m1", 3),
        ("m2", 1),
        ("m2", 1),
    ]


def test_commit_conflict_is_retried_and_each_retry_logged(tmp_path: Path, caplog) -> None:
    uri = lake.table_uri(str(tmp_path), "responses", "BBQ")
    lake.append_chunk(rows("m1", "none", [1]), uri)
    read_versions: list[int] = []

    def merge_racing_another_writer() -> int:
        table = DeltaTable(uri)
        if not read_versions:
            lake.append_chunk(rows("m1", "none", [2]), uri)  # another writer commits to the partition first
        read_versions.append(table.version())
        merge = table.merge(
            rows("m1", "none", [3]),
            "target.model = 'm1' AND target.method = 'none' AND target.value = source.value",
            source_alias="source",
            target_alias="target",
        )
        return merge.when_not_matched_insert_all().execute()["num_target_rows_inserted"]

    forwarded: list[str] = []
    with caplog.at_level(logging.WARNING, logger="quantbias_assets.lake"):
        with lake.commit_retries_logged_to(forwarded.append):
            assert lake._with_commit_retries(merge_racing_another_writer, uri) == 1
        lake.append_chunk(rows("m1", "none", [4]), uri)
    assert read_versions == [0, 1]  # the retry started from the winner's version
    assert len(forwarded) == 1
    assert forwarded[0].startswith(
        f"{uri}: commit attempt 1 of {lake.COMMIT_ATTEMPTS} lost to a concurrent writer "
        "(table now at version 1); retrying in "
    )
    assert "concurrent transaction" in forwarded[0]
    assert [record.getMessage() for record in caplog.records] == forwarded
    assert sorted_rows(lake.read(uri)) == [("m1", "none", 1), ("m1", "none", 2), ("m1", "none", 3), ("m1", "none", 4)]


def test_absent_table_error_names_the_uri(tmp_path: Path) -> None:
    uri = lake.table_uri(str(tmp_path), "questions", "Nothing")
    with pytest.raises(FileNotFoundError, match=f"no Delta table at {uri}"):
        lake.scan(uri)
    with pytest.raises(FileNotFoundError, match="Nothing"):
        lake.delete_where(uri, "true")


def _append_many(uri: str, model: str, chunks: int, start: multiprocessing.synchronize.Barrier) -> None:
    start.wait()
    for chunk in range(chunks):
        lake.append_chunk(rows(model, "none", [chunk * 10 + i for i in range(3)]), uri)


def test_two_processes_appending_to_different_partitions_lose_nothing(tmp_path: Path) -> None:
    uri = lake.table_uri(str(tmp_path), "responses", "BBQ")
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(2)
    chunks = 12
    workers = [context.Process(target=_append_many, args=(uri, model, chunks, start)) for model in ("ma", "mb")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [worker.exitcode for worker in workers] == [0, 0]
    expected = sorted(
        (model, "none", chunk * 10 + i) for model in ("ma", "mb") for chunk in range(chunks) for i in range(3)
    )
    assert sorted_rows(lake.read(uri)) == expected


def test_lake_resource_delegates_to_the_module(tmp_path: Path) -> None:
    resource = LakeResource(root=str(tmp_path))
    uri = resource.uri("responses", "BBQ")
    assert uri == f"{tmp_path}/responses/BBQ"
    resource.append_chunk(rows("m1", "none", [1]), uri)
    resource.replace_partition(rows("m1", "none", [5, 6]), uri, model="m1", method="none")
    resource.append_chunk(rows("m2", "none", [7]), uri)
    assert resource.read(uri, filters={"model": "m1"}, columns=["value"]).to_series().sort().to_list() == [5, 6]
    partition = {"model": "m1", "method": "none"}
    assert resource.insert_absent(rows("m1", "none", [5, 8]), uri, partition=partition, key=["value"]) == 1
    assert resource.scan(uri).select(pl.len()).collect().item() == 4
    resource.write_table(pl.DataFrame({"idx": ["q"]}), resource.uri("questions", "Q"))
    assert resource.read(resource.uri("questions", "Q")).rows() == [("q",)]
