"""Dagster ConfigurableResources: lake, worker launchers, inference settings, model store, dbt."""
