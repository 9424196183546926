-- Fig 4b: % of significant units per base model and dataset, plus "Avg" over datasets.
with per_dataset as (
    select model, dataset_group, 100.0 * avg(significant::int) as pct_significant
    from {{ ref('stg_bias_tests') }}
    group by model, dataset_group
)
select model, dataset_group, pct_significant from per_dataset
union all
select model, 'Avg' as dataset_group, avg(pct_significant) from per_dataset group by model
