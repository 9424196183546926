{#- Social-group asymmetry (spec §7.2) over the rows of `relation`, grouped by `by` columns: rows
    without both bias flags (an invalid guard verdict) are left out; U->B and B->U are percentages
    of ALL the group's remaining rows; a group needs `min_questions` unique questions and a single
    (comma-free) label. -#}
{% macro group_asymmetry(relation, by, min_questions) %}
select
    {{ by | join(', ') }},
    count(distinct idx) as n_questions,
    count(*) as n_rows,
    100.0 * avg(flipped::int) as perc_res_flipped,
    100.0 * avg(bias_flipped::int) as perc_bias_flipped,
    100.0 * avg(unbiased_to_biased::int) as unbiased_to_biased,
    100.0 * avg(biased_to_unbiased::int) as biased_to_unbiased,
    100.0 * avg(unbiased_to_biased::int) - 100.0 * avg(biased_to_unbiased::int) as diff_unb_to_b
from {{ relation }}
where "group" is not null and "group" not like '%,%'
    and is_biased_base is not null and is_biased_quant is not null
group by {{ by | join(', ') }}
having count(distinct idx) >= {{ min_questions }}
{% endmacro %}
