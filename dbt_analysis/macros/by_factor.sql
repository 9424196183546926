{#- The rows of `relation` once per factor (method, weight width, model), as (factor, level,
    `columns`...): an unpivot spelled as `union all`, which sqlglot can trace (dagster-dbt's column
    lineage; it cannot trace DuckDB's UNPIVOT). -#}
{% macro by_factor(relation, columns) %}
{%- for factor in ['method', 'w_bits', 'model'] %}
    select '{{ factor }}' as factor, {{ factor }} as level, {{ columns | join(', ') }} from {{ relation }}
    {%- if not loop.last %}
    union all
    {%- endif %}
{%- endfor %}
{% endmacro %}
