-- The bins of one dataset partition its paired rows: their shares add up to 100 %.
select dataset_group, sum(pct_responses) as total
from {{ ref('table1_uncertainty_bins') }}
group by dataset_group
having abs(sum(pct_responses) - 100) > 1e-6
