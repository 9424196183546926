-- Fig 4c: models ranked by bootstrap % biased (open datasets: % unsafe) natively and after each
-- quantization method, per dataset group (the paper shows FMT10K x RTN W4A16), with
-- the CI-overlap dense rank of the reference and the rank change.
select
    r.*,
    r.rank_quantized - r.rank_native as rank_change
from {{ source('lake', 'model_rankings') }} as r
