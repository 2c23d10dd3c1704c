{#-
    Each sale with its record id, sale month, arrival order and derived features.

    `arrival_seq` orders sales by arrival: loads in the order they were ingested (ingested_at,
    load id, file; a load is one file written in one transaction), then the row number in the
    file. It increases in that order and is unique, with gaps where a file's rows went to
    another partition or were rejected. It is computed from a small per-load aggregate joined
    back, not from a window over every sale, so the view costs one scan of `raw_sales`.

    `period_start` orders sales in time for the prior-segment statistics: the sale month when
    the data set has a time column, otherwise the first arrival of the sale's batch.

    Derived features arrive as SQL already compiled from the data set description, with every
    column name quoted (`price_platform.datasets.expression_sql`).

    `ref('stg_price_data__sales')` is named in each CTE that reads it (not through one shared
    CTE), so PostgreSQL inlines it rather than materialising every sale.
-#}
{%- set spec = dataset() -%}
{%- set time = spec.time -%}

with arrivals as (

    {#- one row per load: a load is one arrival (one file, one ingestion transaction) -#}
    select
        load_id,
        min(source_row_number) as first_row,
        coalesce(
            sum(max(source_row_number) - min(source_row_number) + 1) over (
                order by min(ingested_at), load_id, min(source_file)
                rows between unbounded preceding and 1 preceding
            ),
            0
        ) as rows_before
    from {{ ref('stg_price_data__sales') }}
    group by load_id

),

{% if time is none -%}
batches as (

    select partition_key, min(ingested_at) as first_arrival
    from {{ ref('stg_price_data__sales') }}
    group by partition_key

),

{% endif -%}
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
            {% if time.month_column -%}
            cast({{ adapter.quote(time.month_column) }} as integer),
            {%- else -%}
            1,  {#- a year-only time: the sale's January, as ingestion's partition key -#}
            {%- endif %}
            1
        )
        {%- endif %} as sale_month
        {%- for name, expression in spec.derived.items() %},
        cast(({{ expression }}) as double precision) as {{ adapter.quote(name) }}
        {%- endfor %}
    from {{ ref('stg_price_data__sales') }}

),

enriched as (

    select
        {% if spec.id_column -%}
        cast(dated.{{ adapter.quote(spec.id_column) }} as text)
        {%- else -%}
        dated.partition_key || '/' || coalesce(dated.source_file, '') || '#' || dated.source_row_number
        {%- endif %} as record_id,
        dated.partition_key,
        dated.sale_month,
        cast(arrivals.rows_before + dated.source_row_number - arrivals.first_row + 1 as bigint) as arrival_seq,
        {% if time is none -%}
        batches.first_arrival
        {%- else -%}
        cast(dated.sale_month as timestamptz)
        {%- endif %} as period_start,
        {%- for column in spec.numeric + spec.categorical + (spec.derived | list) %}
        dated.{{ adapter.quote(column) }},
        {%- endfor %}
        dated.{{ adapter.quote(spec.target) }}
    from dated
    {#- left joins to one row per key: PostgreSQL drops them from queries that do not use their columns #}
    left join arrivals on arrivals.load_id = dated.load_id
    {%- if time is none %}
    left join batches on batches.partition_key = dated.partition_key
    {%- endif %}

)

select * from enriched
