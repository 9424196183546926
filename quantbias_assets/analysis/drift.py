"""How far a quantized model moved from its native model: KL(native || quantized) of next-token
distributions on held-out text.

The math (`kl_per_position`, `summarize_drift`) and the choice of held-out text
(`held_out_texts`) are pure; `measure_drift` is the thin edge that runs the models (torch is
imported inside it). Both models are loaded the way the respond worker loads them (the hf
engine), so a quantized checkpoint is measured exactly as it answered the benchmark.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax over the last axis, in float64 (KL of close distributions is a small
    difference of large numbers)."""
    x = np.asarray(logits, dtype=np.float64)
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def kl_per_position(native_logits: np.ndarray, quant_logits: np.ndarray) -> np.ndarray:
    """KL(P_native || P_quant) in nats at every position: sum_v p(v) (log p(v) - log q(v))."""
    native = np.asarray(native_logits)
    quant = np.asarray(quant_logits)
    if native.shape != quant.shape:
        raise ValueError(f"logits: native shape {native.shape} != quantized shape {quant.shape}")
    log_p = log_softmax(native)
    log_q = log_softmax(quant)
    kl = (np.exp(log_p) * (log_p - log_q)).sum(axis=-1)
    return np.maximum(kl, 0.0)  # rounding can give -1e-17 for identical rows


@dataclass(frozen=True)
class DriftRow:
    method: str
    tokens: int
    mean_kl: float
    median_kl: float
    p95_kl: float
    top1_agreement: float  # share of positions whose argmax token is unchanged


def summarize_drift(method: str, kl: np.ndarray, top1_same: np.ndarray) -> DriftRow:
    """One method's summary over all positions of all held-out texts."""
    kl = np.asarray(kl, dtype=np.float64)
    if kl.size == 0:
        raise ValueError(f"drift: {method}: no token positions measured")
    return DriftRow(
        method=method,
        tokens=int(kl.size),
        mean_kl=float(kl.mean()),
        median_kl=float(np.median(kl)),
        p95_kl=float(np.quantile(kl, 0.95)),
        top1_agreement=float(np.asarray(top1_same, dtype=bool).mean()),
    )


def drift_frame(rows: Iterable[DriftRow]) -> pl.DataFrame:
    return pl.DataFrame(
        [row.__dict__ for row in rows],
        schema={
            "method": pl.String,
            "tokens": pl.Int64,
            "mean_kl": pl.Float64,
            "median_kl": pl.Float64,
            "p95_kl": pl.Float64,
            "top1_agreement": pl.Float64,
        },
    )


def held_out_texts(candidates: Sequence[str], excluded: Iterable[str], count: int, seed: int = 0) -> list[str]:
    """`count` distinct texts from `candidates` that are not in `excluded` (the calibration set),
    seeded; fails when there are not enough."""
    banned = {text.strip() for text in excluded}
    usable = sorted({text.strip() for text in candidates if text.strip() and text.strip() not in banned})
    if len(usable) < count:
        raise ValueError(f"held-out text: only {len(usable)} texts outside the calibration set, {count} requested")
    random.Random(seed).shuffle(usable)
    return usable[:count]


def measure_drift(
    native_dir: str,
    quantized_dirs: Mapping[str, str],
    texts: Sequence[str],
    *,
    max_tokens_per_text: int = 256,
    torch_threads: int | None = 1,
    log: Callable[[str], None] = print,
) -> pl.DataFrame:
    """Mean KL(native || quantized) per method over every next-token position of `texts`.

    The native model stays loaded; each quantized model is loaded in turn and both run on the
    same token ids, so only two models are in memory at once.
    """
    import torch

    from quantbias_assets.engines.hf import HFEngine

    native = HFEngine(native_dir, torch_threads=torch_threads)
    tokenizer = native.tokenizer
    token_ids = [ids[:max_tokens_per_text] for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]
    token_ids = [ids for ids in token_ids if len(ids) >= 2]
    if not token_ids:
        raise ValueError("held-out text: no text has 2 or more tokens")

    def logits(engine: HFEngine, ids: list[int]) -> np.ndarray:
        with torch.inference_mode():
            out = engine.model(torch.tensor([ids], device=engine.device)).logits[0]
        return out.float().cpu().numpy()

    rows = []
    for method, folder in quantized_dirs.items():
        quant = HFEngine(folder, torch_threads=torch_threads)
        if quant.tokenizer.get_vocab() != tokenizer.get_vocab():
            raise ValueError(f"{folder}: tokenizer differs from the native model's ({native_dir})")
        kl_parts, same_parts = [], []
        for ids in token_ids:
            base, moved = logits(native, ids), logits(quant, ids)
            kl_parts.append(kl_per_position(base, moved))
            same_parts.append(base.argmax(-1) == moved.argmax(-1))
        quant.close()
        row = summarize_drift(method, np.concatenate(kl_parts), np.concatenate(same_parts))
        log(
            f"drift {method}: mean KL {row.mean_kl:.5f} nats over {row.tokens} tokens, "
            f"top-1 agreement {row.top1_agreement:.3f}"
        )
        rows.append(row)
    native.close()
    return drift_frame(rows)
