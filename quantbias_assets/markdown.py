"""Markdown tables of polars frames for asset metadata, the demo and the written reports."""

from __future__ import annotations

import polars as pl

NO_ROWS = "_(no rows)_"


def markdown_table(
    frame: pl.DataFrame,
    float_digits: int | None = 1,
    *,
    missing: str = "",
    empty: str | None = None,
    max_chars: int | None = None,
) -> str:
    """A markdown table of `frame`.

    Floats get `float_digits` decimals (None: as Python prints them); null cells read `missing`;
    an empty frame gives `empty` when set, else the bare header; a cell longer than `max_chars`
    is cut with an ellipsis. `|` is escaped and newlines become spaces, so a cell never breaks
    the table.
    """
    if empty is not None and frame.is_empty():
        return empty

    def cell(value: object) -> str:
        if value is None:
            return missing
        text = f"{value:.{float_digits}f}" if isinstance(value, float) and float_digits is not None else str(value)
        if max_chars is not None and len(text) > max_chars:
            text = text[: max_chars - 1] + "…"
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in frame.iter_rows()]
    return "\n".join(lines)


def report_table(frame: pl.DataFrame, float_digits: int = 1) -> str:
    """A table for a written report: missing values as –, an empty frame as one line."""
    return markdown_table(frame, float_digits, missing="–", empty=NO_ROWS)
