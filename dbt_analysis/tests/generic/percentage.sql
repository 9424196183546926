{% test percentage(model, column_name) %}
-- a percentage lies in [0, 100] (nulls are left to not_null)
select * from {{ model }} where {{ column_name }} < 0 or {{ column_name }} > 100
{% endtest %}
