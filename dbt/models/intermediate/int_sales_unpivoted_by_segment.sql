{#- One row per sale and segment column (long form), so segment statistics need no per-column SQL. -#}
{%- set spec = dataset() -%}

with sales as (

    select * from {{ ref('int_sales_enriched') }}

),

unpivoted as (

    {% for segment in spec.segments -%}
    select
        record_id,
        period_start,
        '{{ segment }}' as segment_column,
        cast({{ adapter.quote(segment) }} as text) as segment_value,
        {{ adapter.quote(spec.target) }} as price,
        {% if spec.area_column -%}
        {{ adapter.quote(spec.area_column) }}
        {%- else -%}
        cast(null as double precision)
        {%- endif %} as area
    from sales
    {% if not loop.last %}union all{% endif %}
    {% else -%}
    select
        cast(null as text) as record_id,
        cast(null as timestamptz) as period_start,
        cast(null as text) as segment_column,
        cast(null as text) as segment_value,
        cast(null as double precision) as price,
        cast(null as double precision) as area
    where false
    {%- endfor %}

)

select * from unpivoted
