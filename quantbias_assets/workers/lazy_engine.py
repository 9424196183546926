"""An engine that loads its model only when a worker first asks it for work.

Before a worker knows whether anything is pending it needs the engine's name, tokenizer and
`questions_alone` (for the config hash); they come without the weights. A refresh that finds
every row current so never loads a model.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any


class LazyEngine:
    def __init__(self, backend: str, model_path: str | Path, **engine_config: Any) -> None:
        self.name = backend  # each engine's `name` is its backend
        self.model_path = str(model_path)
        self.engine_config = engine_config
        self._engine: Any = None

    @property
    def loaded(self) -> bool:
        return self._engine is not None

    def load(self) -> Any:
        if self._engine is None:
            from quantbias_assets.engines import load_engine

            self._engine = load_engine(self.name, self.model_path, **self.engine_config)
        return self._engine

    @cached_property
    def tokenizer(self) -> Any:
        """The model folder's tokenizer, as both engines load it (chat template, BOS/EOS)."""
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(
            self.model_path, trust_remote_code=bool(self.engine_config.get("trust_remote_code"))
        )

    @cached_property
    def max_model_len(self) -> int | None:
        """The context the length guard checks (engines.base.model_context), from the config."""
        from types import SimpleNamespace

        from transformers import AutoConfig

        from quantbias_assets.engines.base import model_context

        if self._engine is not None:
            return model_context(self._engine)
        config = AutoConfig.from_pretrained(
            self.model_path, trust_remote_code=bool(self.engine_config.get("trust_remote_code"))
        )
        configured = self.engine_config.get("max_model_len") if self.name == "vllm" else None
        return model_context(
            SimpleNamespace(max_model_len=configured, model=SimpleNamespace(config=config), tokenizer=self.tokenizer)
        )

    @cached_property
    def questions_alone(self) -> bool:
        """Engine.questions_alone, for the config hash, without loading the weights."""
        from quantbias_assets.engines import scores_questions_alone

        return scores_questions_alone(self.name, self.model_path)

    def versions(self) -> dict[str, str]:
        if self._engine is None:
            return {"engine": self.name, "model": "not loaded: nothing was pending"}
        return self._engine.versions()

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()

    def __getattr__(self, attribute: str) -> Any:
        # anything else is work: load the model
        if attribute.startswith("_"):
            raise AttributeError(attribute)
        return getattr(self.load(), attribute)
