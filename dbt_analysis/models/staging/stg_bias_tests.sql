select
    t.*,
    coalesce(t.is_significant, false) as significant,
    m.label as method_label,
    m.w_bits,
    m.a_bits
from {{ source('lake', 'bias_tests') }} as t
join {{ ref('quantization_methods') }} as m using (method)
