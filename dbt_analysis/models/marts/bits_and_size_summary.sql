-- §7.3: behaviour change per quantization method, per weight width (`w_bits`) and per base model
-- (with its parameter count), for the closed and the open datasets apart and together (style
-- 'all'): paired rows, those without both bias flags (an invalid guard verdict) and flip rates;
-- units, tested units (with the minimum rows) and the share of tested units with a significant
-- change (Fig 3a/4a instead count an untested unit as not significant, as the reference's figures
-- do); and the ratios to RTN W8A16 of the same style, the paper's 8-bit baseline ("4-bit: 4-6x
-- more changes than 8-bit").
with dataset_styles as (
    select distinct dataset, style from {{ ref('stg_paired_responses') }}
),
model_sizes as (
    select model, any_value(param_size_b) as param_size_b from {{ ref('stg_paired_responses') }} group by model
),
-- one row per (factor, level) of each row: by method, by weight width and by model
paired_rows as (
    select
        method, cast(w_bits as varchar) as w_bits, model, style, flipped, bias_flipped,
        is_biased_base is null or is_biased_quant is null as invalid_verdict
    from {{ ref('stg_paired_responses') }}
),
paired as (
    {{ by_factor('paired_rows', ['style', 'flipped', 'bias_flipped', 'invalid_verdict']) }}
),
unit_rows as (
    select t.method, cast(t.w_bits as varchar) as w_bits, t.model, s.style, t.p_value, t.significant, t.direction
    from {{ ref('stg_bias_tests') }} as t
    join dataset_styles as s using (dataset)
),
units as (
    {{ by_factor('unit_rows', ['style', 'p_value', 'significant', 'direction']) }}
),
flips as (
    select
        factor, level, coalesce(style, 'all') as style,
        count(*) as n_rows,
        sum(invalid_verdict::int) as n_invalid,
        100.0 * avg(flipped::int) as pct_flipped,
        100.0 * avg(bias_flipped::int) as pct_bias_flipped
    from paired
    group by grouping sets ((factor, level, style), (factor, level))
),
significance as (
    select
        factor, level, coalesce(style, 'all') as style,
        count(*) as units,
        count(p_value) as tested,
        sum(significant::int) as significant,
        100.0 * sum(significant::int) / nullif(count(p_value), 0) as pct_significant,
        100.0 * sum((significant and direction = 'more_biased')::int) / nullif(count(p_value), 0) as pct_more_biased,
        100.0 * sum((significant and direction = 'less_biased')::int) / nullif(count(p_value), 0) as pct_less_biased
    from units
    group by grouping sets ((factor, level, style), (factor, level))
),
summary as (
    select * from flips full outer join significance using (factor, level, style)
)
select
    s.factor,
    s.level,
    s.style,
    m.label as method_label,
    m.w_bits,
    m.a_bits,
    z.param_size_b,
    s.n_rows,
    s.n_invalid,
    s.pct_flipped,
    s.pct_bias_flipped,
    s.units,
    s.tested,
    s.significant,
    s.pct_significant,
    s.pct_more_biased,
    s.pct_less_biased,
    s.pct_flipped / nullif(b.pct_flipped, 0) as flip_ratio_vs_8bit,
    s.pct_significant / nullif(b.pct_significant, 0) as significant_ratio_vs_8bit
from summary as s
left join {{ ref('quantization_methods') }} as m on s.factor = 'method' and m.method = s.level
left join model_sizes as z on s.factor = 'model' and z.model = s.level
left join summary as b on b.factor = 'method' and b.level = 'rtn-w8a16' and b.style = s.style
