{#-
    Each sale with its record id, sale month, arrival order and derived features.

    `period_start` orders sales in time for the prior-segment statistics: the sale month when
    the data set has a time column, otherwise the first arrival of the sale's batch.
-#}
{%- set spec = dataset() -%}
{%- set time = spec.time -%}

with sales as (

    select * from {{ ref('stg_price_data__sales') }}

),

dated as (

    select
        *,
        {% if time is none -%}
        cast(null as date)
        {%- elif time.column -%}
        {#- ingestion parsed the date (in whatever format it came) into the month's partition key -#}
        cast(partition_key as date)
        {%- else -%}
        make_date(
            cast({{ adapter.quote(time.year_column) }} as integer),
            cast({{ adapter.quote(time.month_column) }} as integer),
            1
        )
        {%- endif %} as sale_month
    from sales

),

enriched as (

    select
        {% if spec.id_column -%}
        cast({{ adapter.quote(spec.id_column) }} as text)
        {%- else -%}
        partition_key || '/' || coalesce(source_file, '') || '#' || source_row_number
        {%- endif %} as record_id,
        partition_key,
        sale_month,
        row_number() over (order by ingested_at, load_id, source_file, source_row_number) as arrival_seq,
        coalesce(
            cast(sale_month as timestamptz),
            min(ingested_at) over (partition by partition_key)
        ) as period_start,
        {%- for column in spec.numeric + spec.categorical %}
        {{ adapter.quote(column) }},
        {%- endfor %}
        {%- for name, expression in spec.derived.items() %}
        cast(({{ expression }}) as double precision) as {{ adapter.quote(name) }},
        {%- endfor %}
        {{ adapter.quote(spec.target) }}
    from dated

)

select * from enriched
