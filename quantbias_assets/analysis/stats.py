"""Did quantization change a unit's aggregate bias? (spec §6, §9.1–9.2)

A unit is (dataset, model, method, axis) with at least `min_rows` valid paired rows. Per unit:
- the reference's permutation-style bootstrap test (per-row coin-flip swap of the two models'
  answers, then a bootstrap resample; p = max(mean(|d_null| >= |d_obs|), 1/iterations)),
  vectorised over (iterations, rows) and seeded per unit from `seed` and the unit's key;
- Benjamini–Hochberg over all units of all datasets;
- direction and effect size on the unpermuted rows with the sign M_Q − M_B, plus the
  reference's `*_reference` variants (effect size on the frame left by the last permutation,
  sign M_B − M_Q, d > 0 labelled "more biased");
- a percentile bootstrap CI of M_Q − M_B and McNemar's exact test on the paired biased flags.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy import stats as scipy_stats

from quantbias_assets.analysis.metrics import StateEncoding, encode, metric_for
from quantbias_assets.analysis.pairs import analysis_rows

UNIT_KEY = ("dataset", "model", "method", "axis")
# Bound the (iterations x rows) work arrays to a few tens of MB.
MAX_CHUNK_ELEMENTS = 2_000_000
# Null differences equal to the observed one up to float summation noise count as "as extreme".
TIE_TOLERANCE = 1e-12
MIN_EFFECT_SIZE_RESAMPLES = 50

BIAS_TEST_SCHEMA = pl.Schema(
    {
        "dataset": pl.String,
        "dataset_group": pl.String,
        "model": pl.String,
        "method": pl.String,
        "axis": pl.String,
        "n": pl.Int64,
        "n_invalid": pl.Int64,
        "metric": pl.String,
        "metric_base": pl.Float64,
        "metric_quant": pl.Float64,
        "diff": pl.Float64,
        "p_value": pl.Float64,
        "q_value": pl.Float64,
        "is_significant": pl.Boolean,
        "direction": pl.String,
        "effect_size": pl.Float64,
        "direction_reference": pl.String,
        "effect_size_reference": pl.Float64,
        "ci_low": pl.Float64,
        "ci_high": pl.Float64,
        "mcnemar_p": pl.Float64,
        "flip_rate": pl.Float64,
        "bias_flip_rate": pl.Float64,
    }
)


@dataclass(frozen=True)
class BiasTestSettings:
    iterations: int = 1000
    bootstrap_resamples: int = 1000
    effect_size_resamples: int = 200
    min_rows: int = 10
    alpha: float = 0.05
    confidence: float = 0.95
    seed: int = 0


@dataclass(frozen=True)
class UnitResult:
    p_value: float
    ci_low: float
    ci_high: float
    effect_size: float
    effect_size_reference: float
    last_swap: np.ndarray


def unit_rng(seed: int, key: Sequence[str]) -> np.random.Generator:
    """One generator per unit, so a unit's result does not depend on which other units ran."""
    digest = hashlib.sha256("\x1f".join(key).encode()).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:8], "little")])


# ---------------------------------------------------------------- one unit


class _JointStates:
    """Both sides' states in one code (base·S + quant), and the code with the sides swapped."""

    def __init__(self, encoding: StateEncoding) -> None:
        self.encoding = encoding
        self.size = encoding.n_states**2
        self.codes = encoding.base * encoding.n_states + encoding.quant
        self.swapped = encoding.quant * encoding.n_states + encoding.base

    def metrics(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(M_B, M_Q) per row of a (draws, rows) array of joint codes."""
        draws = codes.shape[0]
        offsets = (np.arange(draws, dtype=np.int64) * self.size)[:, None]
        joint = np.bincount((codes + offsets).ravel(), minlength=draws * self.size)
        joint = joint.reshape(draws, self.encoding.n_states, self.encoding.n_states).astype(np.float64)
        return self.encoding.from_counts(joint.sum(axis=2)), self.encoding.from_counts(joint.sum(axis=1))


def _chunks(total: int, n_rows: int) -> list[int]:
    size = max(1, MAX_CHUNK_ELEMENTS // max(n_rows, 1))
    return [min(size, total - start) for start in range(0, total, size)]


def _coin_flips(rng: np.random.Generator, draws: int, n_rows: int) -> np.ndarray:
    """A fair coin per (draw, row), eight per random byte."""
    packed = rng.integers(0, 256, size=(draws, (n_rows + 7) // 8), dtype=np.uint8)
    return np.unpackbits(packed, axis=1, count=n_rows).astype(bool)


def permutation_null(
    states: _JointStates, rng: np.random.Generator, iterations: int
) -> tuple[np.ndarray, np.ndarray]:
    """Null differences M_B − M_Q (swap each row's answers on heads, then resample rows) and the
    last iteration's swap mask (the reference leaves its frame in that state)."""
    n_rows = states.codes.size
    differences, last_swap = [], np.zeros(n_rows, dtype=bool)
    for draws in _chunks(iterations, n_rows):
        swap = _coin_flips(rng, draws, n_rows)
        rows = rng.integers(0, n_rows, size=(draws, n_rows), dtype=np.int32)
        codes = np.where(np.take_along_axis(swap, rows, axis=1), states.swapped[rows], states.codes[rows])
        metric_base, metric_quant = states.metrics(codes)
        differences.append(metric_base - metric_quant)
        last_swap = swap[-1]
    return np.concatenate(differences), last_swap


def permutation_p_value(observed: float, null: np.ndarray) -> float:
    """Two-sided, floored at 1/iterations; NaN null draws never count as extreme."""
    if not np.isfinite(observed):
        return float("nan")
    with np.errstate(invalid="ignore"):
        extreme = np.abs(null) >= abs(observed) - TIE_TOLERANCE
    return float(max(extreme.mean(), 1 / null.size))


def standardised_difference(first: np.ndarray, second: np.ndarray) -> float:
    """(mean first − mean second) / sqrt((var first + var second) / 2) over bootstrap draws
    (ddof 1): NaN with fewer than 50 finite draws, 0 when both are constant."""
    finite = np.isfinite(first) & np.isfinite(second)
    if finite.sum() < MIN_EFFECT_SIZE_RESAMPLES:
        return float("nan")
    first, second = first[finite], second[finite]
    spread = np.sqrt((first.var(ddof=1) + second.var(ddof=1)) / 2)
    if spread == 0:
        return 0.0
    return float((first.mean() - second.mean()) / spread)


def paired_bootstrap(
    encoding: StateEncoding, rows: np.ndarray, swap: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(M_B, M_Q) per resample; `rows` is (draws, n) row indices; `swap` exchanges the two
    models' answers of the marked rows first (the reference's permuted frame)."""
    states = _JointStates(encoding)
    codes = states.codes if swap is None else np.where(swap, states.swapped, states.codes)
    return states.metrics(codes[rows])


def evaluate_unit(encoding: StateEncoding, rng: np.random.Generator, settings: BiasTestSettings) -> UnitResult:
    states = _JointStates(encoding)
    n_rows = states.codes.size
    observed_base, observed_quant = encoding.observed()
    null, last_swap = permutation_null(states, rng, settings.iterations)
    p_value = permutation_p_value(observed_base - observed_quant, null)

    # Paired bootstrap of the unpermuted rows; the first `effect_size_resamples` draws also feed
    # both effect sizes (the reference one on the frame left by the last permutation).
    base_draws, quant_draws, reference_base, reference_quant = [], [], [], []
    done = 0
    for draws in _chunks(settings.bootstrap_resamples, n_rows):
        rows = rng.integers(0, n_rows, size=(draws, n_rows), dtype=np.int32)
        metric_base, metric_quant = paired_bootstrap(encoding, rows)
        base_draws.append(metric_base)
        quant_draws.append(metric_quant)
        wanted = min(draws, max(settings.effect_size_resamples - done, 0))
        if wanted:
            metric_base, metric_quant = paired_bootstrap(encoding, rows[:wanted], swap=last_swap)
            reference_base.append(metric_base)
            reference_quant.append(metric_quant)
        done += draws
    metric_base, metric_quant = np.concatenate(base_draws), np.concatenate(quant_draws)
    differences = metric_quant - metric_base
    tail = 100 * (1 - settings.confidence) / 2
    finite = differences[np.isfinite(differences)]
    ci_low, ci_high = np.percentile(finite, [tail, 100 - tail]) if finite.size else (np.nan, np.nan)
    first = settings.effect_size_resamples
    return UnitResult(
        p_value=p_value,
        ci_low=float(ci_low),
        ci_high=float(ci_high),
        effect_size=standardised_difference(metric_quant[:first], metric_base[:first]),
        effect_size_reference=standardised_difference(
            np.concatenate(reference_base) if reference_base else np.zeros(0),
            np.concatenate(reference_quant) if reference_quant else np.zeros(0),
        ),
        last_swap=last_swap,
    )


# ---------------------------------------------------------------- across units


def benjamini_hochberg(p_values: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """(q values, rejected) over the finite p values, as statsmodels' `fdr_bh`; NaN stays NaN
    and is never rejected."""
    p_values = np.asarray(p_values, dtype=np.float64)
    q_values = np.full(p_values.shape, np.nan)
    rejected = np.zeros(p_values.shape, dtype=bool)
    tested = np.flatnonzero(np.isfinite(p_values))
    if tested.size == 0:
        return q_values, rejected
    order = tested[np.argsort(p_values[tested], kind="stable")]
    ranked = p_values[order]
    ranks = np.arange(1, ranked.size + 1)
    below = ranked <= ranks / ranked.size * alpha
    if below.any():
        rejected[order[: np.flatnonzero(below).max() + 1]] = True
    adjusted = np.minimum.accumulate((ranked * ranked.size / ranks)[::-1])[::-1]
    q_values[order] = np.minimum(adjusted, 1.0)
    return q_values, rejected


def mcnemar_exact(unbiased_to_biased: np.ndarray, biased_to_unbiased: np.ndarray) -> np.ndarray:
    """Exact McNemar: two-sided binomial test of the discordant pairs at 1/2 (1 when none)."""
    low = np.minimum(unbiased_to_biased, biased_to_unbiased)
    discordant = unbiased_to_biased + biased_to_unbiased
    return np.minimum(1.0, 2 * scipy_stats.binom.cdf(low, discordant, 0.5))


def direction(diff: np.ndarray, significant: np.ndarray) -> np.ndarray:
    """more_biased / less_biased by the sign of M_Q − M_B, for significant units only."""
    return np.where(
        significant & (diff > 0), "more_biased", np.where(significant & (diff < 0), "less_biased", "none")
    )


def direction_reference(effect_size_reference: np.ndarray, significant: np.ndarray) -> np.ndarray:
    """The reference's labels: d > 0 is "more biased", anything else (NaN too) "less biased"."""
    return np.where(
        significant, np.where(effect_size_reference > 0, "more_biased", "less_biased"), "none"
    )


def bias_tests(pairs: pl.DataFrame, settings: BiasTestSettings = BiasTestSettings()) -> pl.DataFrame:
    """One row per unit over all datasets of `pairs` (BBQ ambiguous contexts only); BH is applied
    once over every tested unit."""
    rows = analysis_rows(pairs)
    records: list[dict[str, object]] = []
    for (dataset,), dataset_rows in rows.partition_by("dataset", as_dict=True, maintain_order=True).items():
        metric = metric_for(str(dataset))
        units = dataset_rows.partition_by(list(UNIT_KEY[1:]), as_dict=True, maintain_order=True)
        for (model, method, axis), unit in sorted(units.items(), key=lambda item: tuple(map(str, item[0]))):
            key = (str(dataset), str(model), str(method), str(axis))
            records.append(_unit_record(key, metric, unit, settings))
    frame = pl.DataFrame(records, schema=_RECORD_SCHEMA) if records else pl.DataFrame(schema=_RECORD_SCHEMA)
    return _finish(frame, settings)


_RECORD_SCHEMA = pl.Schema(
    {name: dtype for name, dtype in BIAS_TEST_SCHEMA.items()
     if name not in ("q_value", "is_significant", "direction", "direction_reference", "mcnemar_p")}
    | {"unbiased_to_biased": pl.Int64, "biased_to_unbiased": pl.Int64}
)  # fmt: skip


def _unit_record(
    key: tuple[str, str, str, str], metric: str, unit: pl.DataFrame, settings: BiasTestSettings
) -> dict[str, object]:
    valid = unit.filter(pl.col("is_biased_base").is_not_null() & pl.col("is_biased_quant").is_not_null())
    record: dict[str, object] = dict(zip(UNIT_KEY, key, strict=True)) | {
        "dataset_group": unit.get_column("dataset_group")[0],
        "n": valid.height,
        "n_invalid": unit.height - valid.height,
        "metric": metric,
        "flip_rate": valid.get_column("flipped").mean() if valid.height else None,
        "bias_flip_rate": valid.get_column("bias_flipped").mean() if valid.height else None,
        "unbiased_to_biased": int(valid.get_column("unbiased_to_biased").sum()),
        "biased_to_unbiased": int(valid.get_column("biased_to_unbiased").sum()),
    }
    if valid.height == 0:
        return record
    encoding = encode(metric, valid)
    metric_base, metric_quant = encoding.observed()
    record |= {"metric_base": metric_base, "metric_quant": metric_quant, "diff": metric_quant - metric_base}
    if valid.height < settings.min_rows:
        return record
    result = evaluate_unit(encoding, unit_rng(settings.seed, key), settings)
    return record | {
        "p_value": result.p_value,
        "ci_low": result.ci_low,
        "ci_high": result.ci_high,
        "effect_size": result.effect_size,
        "effect_size_reference": result.effect_size_reference,
    }


def _finish(frame: pl.DataFrame, settings: BiasTestSettings) -> pl.DataFrame:
    p_values = frame.get_column("p_value").fill_null(float("nan")).to_numpy()
    q_values, significant = benjamini_hochberg(p_values, settings.alpha)
    diff = frame.get_column("diff").fill_null(float("nan")).to_numpy()
    reference = frame.get_column("effect_size_reference").fill_null(float("nan")).to_numpy()
    mcnemar = mcnemar_exact(
        frame.get_column("unbiased_to_biased").to_numpy(), frame.get_column("biased_to_unbiased").to_numpy()
    )
    return frame.with_columns(
        pl.Series("q_value", q_values, dtype=pl.Float64),
        pl.Series("is_significant", significant, dtype=pl.Boolean),
        pl.Series("direction", direction(diff, significant), dtype=pl.String),
        pl.Series("direction_reference", direction_reference(reference, significant), dtype=pl.String),
        pl.Series("mcnemar_p", mcnemar, dtype=pl.Float64),
    ).select(
        # NaN (undefined: too few rows, 0/0) is stored as null so SQL aggregates skip it
        pl.col(name).cast(dtype).fill_nan(None) if dtype == pl.Float64 else pl.col(name).cast(dtype)
        for name, dtype in BIAS_TEST_SCHEMA.items()
    )
