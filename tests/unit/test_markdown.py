"""The one markdown table: floats, missing values, empty frames, long and unsafe cells."""

from __future__ import annotations

import polars as pl

from quantbias_assets.markdown import NO_ROWS, markdown_table, report_table


def test_floats_nulls_and_integers() -> None:
    frame = pl.DataFrame({"group": ["a", None], "n": [3, None], "rate": [0.125, None]})
    assert markdown_table(frame, 2) == "| group | n | rate |\n|---|---|---|\n| a | 3 | 0.12 |\n|  |  |  |"
    assert markdown_table(frame, None) == "| group | n | rate |\n|---|---|---|\n| a | 3 | 0.125 |\n|  |  |  |"
    assert report_table(frame, 1) == "| group | n | rate |\n|---|---|---|\n| a | 3 | 0.1 |\n| – | – | – |"


def test_an_empty_frame_is_a_bare_header_or_one_line() -> None:
    empty = pl.DataFrame(schema={"dataset": pl.String, "rows": pl.Int64})
    assert markdown_table(empty) == "| dataset | rows |\n|---|---|"
    assert report_table(empty) == NO_ROWS == "_(no rows)_"


def test_a_cell_never_breaks_the_table() -> None:
    frame = pl.DataFrame({"prompt": ["a|b\nc", "x" * 10]})
    assert markdown_table(frame, max_chars=5).splitlines()[2:] == ["| a\\|b c |", "| xxxx… |"]
