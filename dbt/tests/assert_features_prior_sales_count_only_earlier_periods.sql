{#-
    Recounts the prior segment sales of the partition window's features by summing the sales of
    strictly earlier periods with a plain join (no window functions) and returns the sales whose
    stored count differs.

    The recount is done per segment value and partition (small: values x partitions, from one
    pass over the sales; a partition is one period) and hash-joined to the features by the
    sale's own segment value and partition, so the test costs one pass over the sales and one
    over the features, not a join of every sale with every earlier one.
-#}
{{ config(meta={'dagster': {'ref': {'name': 'features'}}}) }}
{%- set spec = dataset() -%}

{% if spec.segments -%}
with counted as (

    select
        partition_key,
        period_start,
        {%- for segment in spec.segments %}
        coalesce(cast({{ adapter.quote(segment) }} as text), '') as value_{{ loop.index }},
        {%- endfor %}
        count(*) as sales
    from {{ ref('int_sales_enriched') }}
    group by partition_key, period_start{% for segment in spec.segments %}, value_{{ loop.index }}{% endfor %}

)
{%- for segment in spec.segments %}

, sales_by_{{ loop.index }} as (

    select value_{{ loop.index }} as segment_value, partition_key, period_start, sum(sales) as sales
    from counted
    group by 1, 2, 3

),

{#- keyed by partition (one period each), so the features join it directly -#}
earlier_by_{{ loop.index }} as (

    select current_period.segment_value, current_period.partition_key, coalesce(sum(earlier.sales), 0) as sales
    from sales_by_{{ loop.index }} as current_period
    left join sales_by_{{ loop.index }} as earlier
        on earlier.segment_value = current_period.segment_value
        and earlier.period_start < current_period.period_start
    group by 1, 2

)
{%- endfor %}

{#- compared per sale in one pass; only the sales with a difference are spread over their segments -#}
, compared as (

    select
        features.record_id
        {%- for segment in spec.segments %},
        coalesce(earlier_by_{{ loop.index }}.sales, -1) is distinct from features.{{ adapter.quote('prior_sales_by_' ~ segment) }} as differs_{{ loop.index }}
        {%- endfor %}
    from {{ ref('features') }} as features
    {%- for segment in spec.segments %}
    left join earlier_by_{{ loop.index }}
        on earlier_by_{{ loop.index }}.segment_value = coalesce(cast(features.{{ adapter.quote(segment) }} as text), '')
        and earlier_by_{{ loop.index }}.partition_key = features.partition_key
    {%- endfor %}
    where {{ in_partition_window('features.partition_key') }}
        and features.partition_key in (select partition_key from counted)

)

select compared.record_id, recount.segment_column
from compared
cross join lateral (
    values
    {%- for segment in spec.segments %}
    ('{{ segment }}', compared.differs_{{ loop.index }}){% if not loop.last %},{% endif %}
    {%- endfor %}
) as recount (segment_column, differs)
where ({% for segment in spec.segments %}compared.differs_{{ loop.index }}{% if not loop.last %} or {% endif %}{% endfor %})
    and recount.differs
{%- else -%}
select record_id, null as segment_column from {{ ref('features') }} where false
{%- endif %}
