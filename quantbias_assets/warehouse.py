"""Read-only SQL on the dbt warehouse (DuckDB), as polars frames: the reports, the demo summary
and the replication report read the marts through this one door."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl


@contextmanager
def warehouse_query(duckdb_path: Path) -> Iterator[Callable[[str], pl.DataFrame]]:
    """`with warehouse_query(path) as query: query("select ...")`, on a read-only connection:
    readers can never change the marts (DuckDB still lets only one process write at a time)."""
    import duckdb

    with duckdb.connect(str(duckdb_path), read_only=True) as con:
        # con.sql(...).pl() hands DuckDB's result to polars directly (one copy, no DB-API warning)
        yield lambda sql: con.sql(sql).pl()
