{#- With a time column, each sale sits in the monthly partition of its sale month. -#}
{%- set spec = dataset() -%}

select record_id, partition_key, sale_month
from {{ ref('features') }}
{% if spec.time is none -%}
where sale_month is not null
{%- else -%}
where sale_month is null or to_char(sale_month, 'YYYY-MM-DD') <> partition_key
{%- endif %}
