-- §7.3: behaviour change by weight bits (8-bit vs 4-bit) and by model size.
with flips as (
    select 'w_bits' as factor, cast(w_bits as varchar) as level, avg(flipped::int) as flip_rate,
           avg(bias_flipped::int) as bias_flip_rate, count(*) as n_rows
    from {{ ref('stg_paired_responses') }} group by w_bits
    union all
    select 'model', model, avg(flipped::int), avg(bias_flipped::int), count(*)
    from {{ ref('stg_paired_responses') }} group by model
),
significance as (
    select 'w_bits' as factor, cast(w_bits as varchar) as level, avg(significant::int) as share_significant
    from {{ ref('stg_bias_tests') }} group by w_bits
    union all
    select 'model', model, avg(significant::int) from {{ ref('stg_bias_tests') }} group by model
)
select f.factor, f.level, f.n_rows, 100.0 * f.flip_rate as pct_flipped,
       100.0 * f.bias_flip_rate as pct_bias_flipped, 100.0 * s.share_significant as pct_significant
from flips as f
left join significance as s using (factor, level)
