-- Fig 4c: models ranked by bootstrap % unsafe (FMT10K) natively and after quantization, with
-- the CI-overlap dense rank of the reference and the rank change.
select
    r.*,
    r.rank_quantized - r.rank_native as rank_change
from {{ source('lake', 'model_rankings') }} as r
