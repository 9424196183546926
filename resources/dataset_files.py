"""The benchmark's dataset files as a Dagster resource: the folder the dataset assets read.

It holds the reference repository's `data/` layout (`closed_datasets/<name>/<axis>.json`,
`open_datasets/...`): $QUANTBIAS_DATA_DIR, else $QUANTBIAS_HOME/datasets, which `quantbias
datasets fetch` fills.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import Field

from quantbias_assets import settings


class DatasetFilesResource(dg.ConfigurableResource):
    folder: str = Field(
        default_factory=lambda: str(settings.data_dir()), description="local copy of the benchmark's data/ folder"
    )

    @property
    def path(self) -> Path:
        return Path(self.folder).absolute()
