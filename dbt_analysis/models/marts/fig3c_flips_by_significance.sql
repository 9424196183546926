-- Fig 3c: pooled response flip rate, sum(FR_u * n_u) / sum(n_u), over significant and over
-- non-significant units: flips hide behind unchanged aggregates.
select
    dataset_group,
    case when significant then 'significant' else 'not significant' end as effect,
    count(*) as n_units,
    sum(n) as n_rows,
    100.0 * sum(flip_rate * n) / nullif(sum(n), 0) as pct_responses_flipped
from {{ ref('stg_bias_tests') }}
where flip_rate is not null
group by dataset_group, significant
