-- Fig 3a: per dataset, the share of units whose aggregate bias changed significantly (after BH),
-- split by direction (computed correctly: sign of M_Q - M_B; the reference's inverted,
-- permutation-contaminated direction is `direction_reference`).
select
    dataset_group,
    count(*) as n_units,
    sum(significant::int) as n_significant,
    100.0 * avg(significant::int) as pct_significant,
    100.0 * avg((significant and direction = 'more_biased')::int) as pct_more_biased,
    100.0 * avg((significant and direction = 'less_biased')::int) as pct_less_biased,
    100.0 * avg((significant and direction_reference = 'more_biased')::int) as pct_more_biased_reference
from {{ ref('stg_bias_tests') }}
group by dataset_group
