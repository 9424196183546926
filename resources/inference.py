"""Inference settings for the respond worker: engine, numerics, generation, chunking, sampling."""

from __future__ import annotations

import typing
from dataclasses import fields
from typing import Any

import dagster as dg
from pydantic import Field, create_model

from quantbias_assets.contracts import EngineSettings, RespondSettings, generation_styles
from quantbias_assets.engines.base import PINNED_TEMPLATE_DATE


def engine_config_class(name: str, **defaults: Any) -> type[dg.Config]:
    """contracts.EngineSettings as Dagster config (its fields declared once, there), with
    `defaults` replacing some of its defaults."""
    hints = typing.get_type_hints(EngineSettings)
    config_fields: dict[str, Any] = {
        item.name: (
            hints[item.name],
            Field(default=defaults.get(item.name, item.default), description=item.metadata["description"]),
        )
        for item in fields(EngineSettings)
    }
    doc = "How a worker loads its engine (quantbias_assets.contracts.EngineSettings)."
    return create_model(name, __base__=dg.Config, __doc__=doc, **config_fields)


# The respond worker's `engine` config.
EngineConfig = engine_config_class("EngineConfig")


def engine_settings(config: Any) -> EngineSettings:
    return EngineSettings(**config.model_dump())


class InferenceResource(dg.ConfigurableResource):
    """How the respond worker loads its engine and answers questions.

    Which settings change the responses' `config_hash` is declared with the request
    (quantbias_assets.contracts: EngineSettings.SPEED_ONLY, RespondSettings.UNHASHED).
    """

    engine: EngineConfig = Field(  # type: ignore[valid-type]
        default=EngineConfig(), description="engine backend, numerics and speed"
    )

    max_new_tokens: int = Field(default=512, description="single-turn open datasets")
    fmt_max_new_tokens_per_turn: int = Field(default=150, description="each of the 5 FMT10K turns")
    reference_sampling: bool = Field(
        default=False,
        description="reproduce the reference code: T=1 seed 1 (FMT10K: T=0.7) instead of greedy",
    )
    add_special_tokens_reference: bool = Field(
        default=False,
        description="tokenize templated prompts with special tokens (vLLM 0.8.3's double BOS)",
    )

    template_date: str | None = Field(
        default=PINNED_TEMPLATE_DATE,
        description="the date Llama-3.x chat templates write into the system header; "
        "None = the run's own date (the reference: its Llama-3.2 prompts depend on the day)",
    )

    max_context_tokens: int | None = Field(
        default=None,
        description="the most tokens one question may take (scored: prompt + choice; generated: prompt + "
        "max_new_tokens); a longer question fails alone. None = the model's context",
    )

    chunk_rows: int = Field(default=256, description="questions per Delta commit")
    sample_per_axis: int | None = Field(default=None, description="only the first N questions of each axis (demos)")

    def generation_config(self) -> dict[str, dict[str, Any]]:
        """GenerationSettings fields for single-turn datasets and for each FMT10K turn."""
        return generation_styles(
            max_new_tokens=self.max_new_tokens,
            fmt_max_new_tokens_per_turn=self.fmt_max_new_tokens_per_turn,
            reference_sampling=self.reference_sampling,
        )

    def settings(self) -> RespondSettings:
        return RespondSettings(
            engine=engine_settings(self.engine),
            generation=self.generation_config(),
            add_special_tokens_reference=self.add_special_tokens_reference,
            template_date=self.template_date,
            chunk_rows=self.chunk_rows,
            sample_per_axis=self.sample_per_axis,
            max_context_tokens=self.max_context_tokens,
        )

    def to_extras(self) -> dict[str, Any]:
        """The part of the respond worker's Pipes extras that this resource decides."""
        return self.settings().to_extras()
