{% test unique_combination(model, columns) %}
-- no two rows share the same values of `columns` (the grain of the table)
select {{ columns | join(', ') }}, count(*) as n
from {{ model }}
group by {{ columns | join(', ') }}
having count(*) > 1
{% endtest %}
