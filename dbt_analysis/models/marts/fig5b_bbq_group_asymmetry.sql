-- Fig 5b: BBQ (ambiguous) bias flips per stereotyped group at three levels: across all models,
-- per base model, per quantization method; groups need >= 50 unique questions.
{{ config(materialized='table') }}
with bbq as (
    select *, 'all' as level_all from {{ ref('stg_paired_responses') }} where dataset = 'BBQ'
)
select 'all' as level, 'all' as level_value, * exclude (level_all)
from ({{ group_asymmetry('bbq', ['level_all', '"group"'], 50) }})
union all by name
select 'model' as level, model as level_value, * exclude (model)
from ({{ group_asymmetry('bbq', ['model', '"group"'], 50) }})
union all by name
select 'method' as level, method_label as level_value, * exclude (method_label)
from ({{ group_asymmetry('bbq', ['method_label', '"group"'], 50) }})
