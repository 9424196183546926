"""Metadata every table asset shows: its typed column schema and a short markdown preview."""

import dagster as dg
import polars as pl

from quantbias_assets.markdown import markdown_table

PREVIEW_TEXT_CHARS = 60


def markdown_preview(frame: pl.DataFrame) -> str:
    """A preview: values as stored, long texts cut to PREVIEW_TEXT_CHARS."""
    return markdown_table(frame, None, max_chars=PREVIEW_TEXT_CHARS)


def column_schema(frame: pl.DataFrame) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(name, str(dtype)) for name, dtype in frame.schema.items()])
