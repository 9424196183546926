"""The one Dagster entry point: `defs`."""

import dagster as dg

defs = dg.Definitions(assets=[])
