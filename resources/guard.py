"""Guard settings for the judge worker: which Llama Guard, which engine, context, chunking."""

from __future__ import annotations

from typing import Any

import dagster as dg
from pydantic import Field

from quantbias_assets.contracts import JudgeSettings
from quantbias_assets.guard import DEFAULT_GUARD_MODEL
from resources.inference import engine_config_class, engine_settings

# The judge worker's `engine` config: Llama Guard 3 ships bfloat16.
GuardEngineConfig = engine_config_class("GuardEngineConfig", dtype="bfloat16")


class GuardResource(dg.ConfigurableResource):
    """How the judge worker loads the guard model and judges responses.

    Which settings can change a verdict (and so enter `guard_config_hash`) is declared with the
    request (quantbias_assets.contracts: EngineSettings.SPEED_ONLY, JudgeSettings.UNHASHED);
    the guard's context is `engine.max_model_len`, with either backend.
    """

    model: str = Field(default=DEFAULT_GUARD_MODEL, description="guard model: a local folder or a hub id")
    revision: str | None = Field(
        default=None,
        description="hub revision; for a local folder, naming it here skips hashing its weights",
    )
    engine: GuardEngineConfig = Field(  # type: ignore[valid-type]
        default=GuardEngineConfig(),
        description="engine backend, numerics, context (longer conversations are cut and flagged) and speed",
    )
    max_new_tokens: int = Field(default=100, description="tokens of the verdict (reference: 100)")
    judge_full_conversation: bool = Field(
        default=False,
        description="FMT10K: judge all 5 turns instead of only the last one (the reference)",
    )
    chunk_rows: int = Field(default=256, description="verdicts per Delta commit")

    def settings(self) -> JudgeSettings:
        return JudgeSettings(
            engine=engine_settings(self.engine),
            guard_model=self.model,
            guard_revision=self.revision,
            max_new_tokens=self.max_new_tokens,
            judge_full_conversation=self.judge_full_conversation,
            chunk_rows=self.chunk_rows,
        )

    def to_extras(self) -> dict[str, Any]:
        """The part of the judge worker's Pipes extras that this resource decides."""
        return self.settings().to_extras()
