-- Table 1: per closed dataset and base-model uncertainty bin, the share of paired rows in the
-- bin and the response / bias flip rates within it (percent; spec §4).
with closed as (
    select * from {{ ref('stg_paired_responses') }} where style = 'closed'
),
totals as (
    select dataset_group, count(*) as dataset_rows, max(n_choices) as num_choices
    from closed group by dataset_group
)
select
    c.dataset_group,
    c.uncertainty_bin,
    count(*) as n_rows,
    100.0 * count(*) / any_value(t.dataset_rows) as pct_responses,
    100.0 * avg(c.flipped::int) as response_flip,
    100.0 * avg(c.bias_flipped::int) as bias_flip,
    round(100.0 * count(*) / any_value(t.dataset_rows)) as pct_responses_rounded,
    round(100.0 * avg(c.flipped::int)) as response_flip_rounded,
    round(100.0 * avg(c.bias_flipped::int)) as bias_flip_rounded,
    any_value(t.num_choices) as num_choices
from closed as c
join totals as t using (dataset_group)
group by c.dataset_group, c.uncertainty_bin
