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
    """Both sides' states of each row in one small integer code (base·S + quant)."""

    def __init__(self, encoding: StateEncoding) -> None:
        n_states = encoding.n_states
        self.encoding = encoding
        self.size = n_states**2
        dtype = np.uint8 if self.size <= 1 << 8 else np.uint16 if self.size <= 1 << 16 else np.uint32
        self.codes = (encoding.base * n_states + encoding.quant).astype(dtype)
        # XOR-ing a code with its row's mask exchanges the two sides (-> quant·S + base)
        self.swap_mask = self.codes ^ (encoding.quant * n_states + encoding.base).astype(dtype)

    def swapped(self, coins: np.ndarray) -> np.ndarray:
        """The codes with the sides of the rows where `coins` is 1 exchanged; coins (..., n) 0/1."""
        return (coins.astype(self.codes.dtype, copy=False) * self.swap_mask) ^ self.codes

    def metrics(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(M_B, M_Q) per row of a (draws, n) array of joint codes."""
        draws = codes.shape[0]
        if self.encoding.n_states == 2:
            # Binary states (most datasets): code = 2·base + quant, so two bit sums are the
            # counts, several times cheaper than a bincount over (draws, rows).
            rows = codes.shape[1]
            base_ones = (codes >> 1).sum(axis=1, dtype=np.int64).astype(np.float64)
            quant_ones = (codes & 1).sum(axis=1, dtype=np.int64).astype(np.float64)
            return (
                self.encoding.from_counts(np.stack([rows - base_ones, base_ones], axis=-1)),
                self.encoding.from_counts(np.stack([rows - quant_ones, quant_ones], axis=-1)),
            )
        offsets = (np.arange(draws, dtype=np.int64) * self.size)[:, None]
        joint = np.bincount((codes + offsets).ravel(), minlength=draws * self.size)
        joint = joint.reshape(draws, self.encoding.n_states, self.encoding.n_states).astype(np.float64)
        return self.encoding.from_counts(joint.sum(axis=2)), self.encoding.from_counts(joint.sum(axis=1))


def _chunks(total: int, n_rows: int) -> list[int]:
    size = max(1, MAX_CHUNK_ELEMENTS // max(n_rows, 1))
    return [min(size, total - start) for start in range(0, total, size)]


def _coin_flips(rng: np.random.Generator, draws: int, n_rows: int) -> np.ndarray:
    """A fair coin (0/1, uint8) per (draw, row), eight per random byte."""
    packed = rng.integers(0, 256, size=(draws, (n_rows + 7) // 8), dtype=np.uint8)
    return np.unpackbits(packed, axis=1, count=n_rows)


@dataclass
class _Draws:
    null: list[np.ndarray]
    bootstrap_base: list[np.ndarray]
    bootstrap_quant: list[np.ndarray]
    effect_rows: list[np.ndarray]
    last_coins: np.ndarray


def _resample(states: _JointStates, rng: np.random.Generator, settings: BiasTestSettings) -> _Draws:
    """All resampling of one unit as (draws, n) arrays, chunked to bound memory.

    Draw i resamples rows once; the permutation test swaps each row's answers on heads before
    reading that resample, the bootstrap reads it as is (each is a valid draw of its own
    distribution, and sharing the row indices halves the random numbers needed).
    """
    n_rows = states.codes.size
    draws = _Draws([], [], [], [], np.zeros(n_rows, dtype=np.uint8))
    done = 0
    for size in _chunks(max(settings.iterations, settings.bootstrap_resamples), n_rows):
        rows = rng.integers(0, n_rows, size=(size, n_rows))
        permuted = min(size, max(settings.iterations - done, 0))
        if permuted:
            coins = _coin_flips(rng, permuted, n_rows)
            flat_rows = rows[:permuted] + (np.arange(permuted) * n_rows)[:, None]
            metric_base, metric_quant = states.metrics(states.swapped(coins).ravel().take(flat_rows))
            draws.null.append(metric_base - metric_quant)
            draws.last_coins = coins[-1]
        bootstrapped = min(size, max(settings.bootstrap_resamples - done, 0))
        if bootstrapped:
            metric_base, metric_quant = states.metrics(states.codes[rows[:bootstrapped]])
            draws.bootstrap_base.append(metric_base)
            draws.bootstrap_quant.append(metric_quant)
        kept = min(size, max(settings.effect_size_resamples - done, 0))
        if kept:
            draws.effect_rows.append(rows[:kept])
        done += size
    return draws


def paired_bootstrap(
    encoding: StateEncoding, rows: np.ndarray, swap: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(M_B, M_Q) per resample; `rows` is (draws, n) row indices; `swap` exchanges the two
    models' answers of the marked rows first (the reference's permuted frame)."""
    states = _JointStates(encoding)
    codes = states.codes if swap is None else states.swapped(np.asarray(swap, dtype=np.uint8))
    return states.metrics(codes[rows])


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


def evaluate_unit(encoding: StateEncoding, rng: np.random.Generator, settings: BiasTestSettings) -> UnitResult:
    states = _JointStates(encoding)
    observed_base, observed_quant = encoding.observed()
    draws = _resample(states, rng, settings)
    p_value = permutation_p_value(observed_base - observed_quant, np.concatenate(draws.null))
    metric_base, metric_quant = np.concatenate(draws.bootstrap_base), np.concatenate(draws.bootstrap_quant)
    differences = metric_quant - metric_base
    tail = 100 * (1 - settings.confidence) / 2
    finite = differences[np.isfinite(differences)]
    ci_low, ci_high = np.percentile(finite, [tail, 100 - tail]) if finite.size else (np.nan, np.nan)
    # Both effect sizes read the same first resamples: the correct one the rows as they are,
    # the reference one the frame its permutation loop left behind (the last swap).
    effect_rows = np.concatenate(draws.effect_rows)
    effect_base, effect_quant = states.metrics(states.codes[effect_rows])
    reference_base, reference_quant = states.metrics(states.swapped(draws.last_coins)[effect_rows])
    return UnitResult(
        p_value=p_value,
        ci_low=float(ci_low),
        ci_high=float(ci_high),
        effect_size=standardised_difference(effect_quant, effect_base),
        effect_size_reference=standardised_difference(reference_base, reference_quant),
        last_swap=draws.last_coins.astype(bool),
    )


# ---------------------------------------------------------------- across units


def benjamini_hochberg(p_values: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """(q values, rejected) over the finite p values, as statsmodels' `fdr_bh`; NaN stays NaN
    and is never rejected. Rejecting q ≤ alpha is the BH step-up rule."""
    p_values = np.asarray(p_values, dtype=np.float64)
    q_values = np.full(p_values.shape, np.nan)
    tested = np.isfinite(p_values)
    if tested.any():
        q_values[tested] = scipy_stats.false_discovery_control(p_values[tested], method="bh")
    return q_values, tested & (q_values <= alpha)


def mcnemar_exact(unbiased_to_biased: np.ndarray, biased_to_unbiased: np.ndarray) -> np.ndarray:
    """Exact McNemar: two-sided binomial test of the discordant pairs at 1/2 (1 when none)."""
    low = np.minimum(unbiased_to_biased, biased_to_unbiased)
    discordant = unbiased_to_biased + biased_to_unbiased
    return np.minimum(1.0, 2 * scipy_stats.binom.cdf(low, discordant, 0.5))


def direction(diff: np.ndarray, significant: np.ndarray) -> np.ndarray:
    """more_biased / less_biased by the sign of M_Q − M_B, for significant units only."""
    return np.where(significant & (diff > 0), "more_biased", np.where(significant & (diff < 0), "less_biased", "none"))


def direction_reference(effect_size_reference: np.ndarray, significant: np.ndarray) -> np.ndarray:
    """The reference's labels: d > 0 is "more biased", anything else (NaN too) "less biased"."""
    return np.where(significant, np.where(effect_size_reference > 0, "more_biased", "less_biased"), "none")


def bias_tests(pairs: pl.DataFrame, settings: BiasTestSettings = BiasTestSettings()) -> pl.DataFrame:
    """One row per unit over all datasets of `pairs` (BBQ ambiguous contexts only); BH is applied
    once over every tested unit."""
    valid = pl.col("is_biased_base").is_not_null() & pl.col("is_biased_quant").is_not_null()
    # sorted down to idx: the seeded resamples must not depend on the order rows were read in
    rows = analysis_rows(pairs).with_columns(_valid=valid).sort(*UNIT_KEY, "idx")
    summary = rows.group_by(*UNIT_KEY, maintain_order=True).agg(
        dataset_group=pl.col("dataset_group").first(),
        n=pl.col("_valid").sum().cast(pl.Int64),
        n_invalid=(~pl.col("_valid")).sum().cast(pl.Int64),
        flip_rate=pl.col("flipped").filter(pl.col("_valid")).mean(),
        bias_flip_rate=pl.col("bias_flipped").filter(pl.col("_valid")).mean(),
        unbiased_to_biased=pl.col("unbiased_to_biased").filter(pl.col("_valid")).sum().cast(pl.Int64),
        biased_to_unbiased=pl.col("biased_to_unbiased").filter(pl.col("_valid")).sum().cast(pl.Int64),
    )
    results = [
        _dataset_results(str(dataset), frame, settings)
        for (dataset,), frame in rows.filter(pl.col("_valid")).partition_by("dataset", as_dict=True).items()
    ]
    tested = pl.concat(results) if results else pl.DataFrame(schema=_RESULT_SCHEMA)
    return _finish(summary.join(tested, on=list(UNIT_KEY), how="left"), settings)


_RESULT_SCHEMA = pl.Schema(
    {name: BIAS_TEST_SCHEMA[name] for name in (*UNIT_KEY, "metric", "metric_base", "metric_quant", "p_value",
                                                "ci_low", "ci_high", "effect_size", "effect_size_reference")}
)  # fmt: skip


def _dataset_results(dataset: str, rows: pl.DataFrame, settings: BiasTestSettings) -> pl.DataFrame:
    """Metrics and tests of every unit of one dataset; `rows` are its valid rows sorted by unit.

    The dataset is encoded once; each unit is a slice of the code arrays (no per-unit frames).
    """
    metric = metric_for(dataset)
    encoding = encode(metric, rows)
    bounds = rows.group_by(*UNIT_KEY[1:], maintain_order=True).len()
    records = []
    start = 0
    for model, method, axis, length in bounds.iter_rows():
        key = (dataset, model, method, axis)
        unit = StateEncoding(
            encoding.base[start : start + length],
            encoding.quant[start : start + length],
            encoding.n_states,
            encoding.from_counts,
        )
        start += length
        metric_base, metric_quant = unit.observed()
        record = dict(zip(UNIT_KEY, key, strict=True)) | {
            "metric": metric,
            "metric_base": metric_base,
            "metric_quant": metric_quant,
        }
        if length >= settings.min_rows:
            result = evaluate_unit(unit, unit_rng(settings.seed, key), settings)
            record |= {
                "p_value": result.p_value,
                "ci_low": result.ci_low,
                "ci_high": result.ci_high,
                "effect_size": result.effect_size,
                "effect_size_reference": result.effect_size_reference,
            }
        records.append(record)
    return pl.DataFrame(records, schema=_RESULT_SCHEMA)


def _finish(frame: pl.DataFrame, settings: BiasTestSettings) -> pl.DataFrame:
    frame = frame.with_columns(
        metric=pl.col("metric").fill_null(pl.col("dataset").replace_strict(_metric_names(frame), default=None)),
        diff=pl.col("metric_quant") - pl.col("metric_base"),
    )
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


def _metric_names(frame: pl.DataFrame) -> dict[str, str]:
    """Units whose rows are all invalid have no metric values but still name their metric."""
    return {name: metric_for(name) for name in frame.get_column("dataset").unique().to_list()}
