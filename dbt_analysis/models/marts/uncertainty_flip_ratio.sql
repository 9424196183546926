-- The headline "high-uncertainty responses are k x more likely to change": per dataset,
-- response flip rate in the high bin over the low bin (null when the low bin never flips).
select
    dataset_group,
    max(case when uncertainty_bin = 'high' then response_flip end) as response_flip_high,
    max(case when uncertainty_bin = 'low' then response_flip end) as response_flip_low,
    max(case when uncertainty_bin = 'high' then response_flip end)
        / nullif(max(case when uncertainty_bin = 'low' then response_flip end), 0) as high_to_low_ratio
from {{ ref('table1_uncertainty_bins') }}
group by dataset_group
