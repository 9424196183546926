"""The one Dagster entry point: `defs`.

Resources come from the environment-keyed sets of `resources/environments.py`
(QUANTBIAS_ENV=local, the default, or cluster); automation is attached in
`quantbias_assets/automation.py`, and nowhere else.
"""

import dagster as dg

from quantbias_assets import automation
from quantbias_assets.assets.analysis import bias_tests_table, paired_responses
from quantbias_assets.assets.checkpoints import checkpoint_assets
from quantbias_assets.assets.datasets import dataset_file_assets, observe_dataset_files_job, question_assets
from quantbias_assets.assets.marts import analysis_marts
from quantbias_assets.assets.rankings import model_rankings
from quantbias_assets.assets.reports import paper_figures
from quantbias_assets.assets.responses import response_assets
from quantbias_assets.assets.text_patterns import text_patterns
from quantbias_assets.assets.verdicts import verdict_assets
from quantbias_assets.catalog.models import load_user_entries
from resources.environments import resources_for

worker_assets = [*checkpoint_assets, *response_assets, *verdict_assets]
WORKER_ASSET_KEYS = [key for asset in worker_assets for key in asset.keys]
assets = automation.with_automation(
    [
        *question_assets,
        *worker_assets,
        paired_responses,
        bias_tests_table,
        model_rankings,
        text_patterns,
        analysis_marts,
        paper_figures,
    ]
)

defs = dg.Definitions(
    assets=[*dataset_file_assets, *assets],
    jobs=[observe_dataset_files_job],
    schedules=[automation.observe_dataset_files_schedule(observe_dataset_files_job)],
    sensors=[
        automation.automation_sensor(),
        # the user's entries only: the paper's models become partitions when asked for
        automation.build_model_registry_sensor(
            lambda: [entry.nickname for entry in load_user_entries()], WORKER_ASSET_KEYS
        ),
    ],
    resources=resources_for(),
    # Every step runs in its run's process: the light ones (file hashing, question tables,
    # analysis, dbt) take seconds, while a process per step costs an import of this code
    # location each; the model steps already run their work in a Pipes subprocess or pod.
    executor=dg.in_process_executor,
)
