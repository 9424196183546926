-- U->B and B->U are disjoint parts of the bias flips, and diff is their difference.
select * from {{ ref('group_asymmetry_by_dataset') }}
where unbiased_to_biased + biased_to_unbiased > perc_bias_flipped + 1e-9
   or abs(diff_unb_to_b - (unbiased_to_biased - biased_to_unbiased)) > 1e-9
