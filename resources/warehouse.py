"""The analysis warehouse as a Dagster resource: dbt's DuckDB file, and the folder of the figures
drawn from it.

dbt builds the marts into `path` (the file name names the database: `warehouse.main.<model>`);
`reports/paper_figures` reads them back and writes its PNG files to `figures_dir`.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import Field

from quantbias_assets import settings


class WarehouseResource(dg.ConfigurableResource):
    path: str = Field(
        default_factory=lambda: str(settings.analysis_duckdb_path()), description="the DuckDB file of the marts"
    )
    figures_dir: str = Field(
        default_factory=lambda: str(settings.figures_dir()), description="folder of the paper's figures (PNG)"
    )

    @property
    def database_file(self) -> Path:
        return Path(self.path)

    @property
    def figures_folder(self) -> Path:
        return Path(self.figures_dir)
