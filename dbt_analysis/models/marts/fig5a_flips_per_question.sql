-- Fig 5a: per question, the % of model pairs whose response flipped (a few questions flip
-- almost everywhere, most almost nowhere). Pairs whose flip is unknown (an invalid guard
-- verdict on either side) are left out.
select
    dataset_group,
    idx,
    count(*) as n_pairs,
    100.0 * avg(flipped::int) as pct_flipped
from {{ ref('stg_paired_responses') }}
where flipped is not null
group by dataset_group, idx
