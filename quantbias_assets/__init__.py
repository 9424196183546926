"""quantbias: how quantization changes the social bias of LLMs, as Dagster assets.

This package must import nothing heavy: workers start in images that have only
dagster-pipes, polars, deltalake and their inference engine.
"""

__version__ = "0.1.0"
