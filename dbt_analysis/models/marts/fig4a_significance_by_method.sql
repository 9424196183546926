-- Fig 4a: % of significant units per quantization method and dataset, plus the unweighted
-- average over datasets ("Avg").
with per_dataset as (
    select method, method_label, w_bits, dataset_group, 100.0 * avg(significant::int) as pct_significant
    from {{ ref('stg_bias_tests') }}
    group by method, method_label, w_bits, dataset_group
)
select method, method_label, w_bits, dataset_group, pct_significant from per_dataset
union all
select method, method_label, w_bits, 'Avg' as dataset_group, avg(pct_significant)
from per_dataset
group by method, method_label, w_bits
