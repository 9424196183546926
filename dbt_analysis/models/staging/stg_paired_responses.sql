-- Paired rows as the paper analyses them: BBQ keeps ambiguous contexts only (spec §1.2).
select
    p.*,
    m.label as method_label,
    m.w_bits,
    m.a_bits,
    try_cast(regexp_extract(p.model, '-(\d+\.?\d*)b', 1) as double) as param_size_b
from {{ source('lake', 'paired_responses') }} as p
join {{ ref('quantization_methods') }} as m using (method)
where p.dataset <> 'BBQ' or p.context_condition = 'ambig'
