{#-
    One row per sale and segment column (long form), so segment statistics need no per-column SQL.
    One scan of the sales: each sale is spread over its segment columns with a lateral VALUES list.

    The `depends_on` hint names `int_sales_enriched` outside the `if`: the manifest Dagster reads
    is parsed without the `dataset` var (no segments), and a `ref` only inside the `if` would be
    missing from its graph, so a backfill would start this model before `int_sales_enriched` exists.
-#}
{%- set spec = dataset() -%}
-- depends_on: {{ ref('int_sales_enriched') }}
{% if spec.segments -%}
select
    sales.record_id,
    sales.period_start,
    segments.segment_column,
    segments.segment_value,
    sales.{{ adapter.quote(spec.target) }} as price,
    {% if spec.area_column -%}
    sales.{{ adapter.quote(spec.area_column) }}
    {%- else -%}
    cast(null as double precision)
    {%- endif %} as area
from {{ ref('int_sales_enriched') }} as sales
cross join lateral (
    values
    {%- for segment in spec.segments %}
    ('{{ segment }}', cast(sales.{{ adapter.quote(segment) }} as text)){% if not loop.last %},{% endif %}
    {%- endfor %}
) as segments (segment_column, segment_value)
{%- else -%}
select
    cast(null as text) as record_id,
    cast(null as timestamptz) as period_start,
    cast(null as text) as segment_column,
    cast(null as text) as segment_value,
    cast(null as double precision) as price,
    cast(null as double precision) as area
where false
{%- endif %}
