{#- Generic test: no two rows share the same values in `columns` (dbt_utils is not installed). -#}
{% test unique_combination(model, columns) %}

{%- set quoted = [] -%}
{%- for column in columns %}{% do quoted.append(adapter.quote(column)) %}{% endfor %}
select {{ quoted | join(', ') }}, count(*) as occurrences
from {{ model }}
group by {{ quoted | join(', ') }}
having count(*) > 1

{% endtest %}
