-- Paired rows as the paper analyses them (`analysed`, decided where the rows are built: BBQ keeps
-- ambiguous contexts only, spec §1.2), with the method's label and bits from the catalog's seed.
select
    p.*,
    m.label as method_label,
    m.w_bits,
    m.a_bits
from {{ source('lake', 'paired_responses') }} as p
join {{ ref('quantization_methods') }} as m using (method)
where p.analysed
