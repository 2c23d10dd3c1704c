{#-
    Recounts the prior segment sales of the partition window's features by summing the sales of
    strictly earlier periods with a plain join (no window functions) and returns the sales whose
    stored count differs.
-#}
{{ config(meta={'dagster': {'ref': {'name': 'features'}}}) }}
{%- set spec = dataset() -%}

with sales as (

    select * from {{ ref('int_sales_enriched') }}

),

features as (

    select * from {{ ref('features') }}
    where {{ in_partition_window('partition_key') }}

)

{% for segment in spec.segments -%}
{%- set value = "coalesce(cast(" ~ adapter.quote(segment) ~ " as text), '')" -%}
, sales_by_{{ loop.index }} as (

    select {{ value }} as segment_value, period_start, count(*) as sales
    from sales
    group by 1, 2

)
{% endfor %}

{% for segment in spec.segments -%}
select features.record_id, '{{ segment }}' as segment_column
from features
join sales as current_sale on current_sale.record_id = features.record_id
left join sales_by_{{ loop.index }} as earlier
    on earlier.segment_value = coalesce(cast(current_sale.{{ adapter.quote(segment) }} as text), '')
    and earlier.period_start < current_sale.period_start
group by features.record_id, features.{{ adapter.quote('prior_sales_by_' ~ segment) }}
having coalesce(sum(earlier.sales), 0) <> features.{{ adapter.quote('prior_sales_by_' ~ segment) }}
{% if not loop.last %}union all{% endif %}
{% else -%}
select record_id, null as segment_column from features where false
{%- endfor %}
