"""Dagster ConfigurableResources: lake, worker launchers, inference settings, model store, dataset files,
warehouse, dbt."""
