{#-
    The model's training table: one row per sale with its features, derived features, target
    and the prior-segment statistics (analysis only). Built partition by partition: a run
    replaces the rows of the partition window `min_partition`..`max_partition` and keeps the
    others, in one transaction (the delete is a pre-hook inside the insert's transaction).

    The table's comment records the hash of the data set description it was built from (the
    `dataset_hash` var); Dagster compares it before a build and rebuilds every partition with
    `--full-refresh` when the description changed (price_platform.defs.features.refresh).

    The table is UNLOGGED: it is rebuilt from `raw_sales` at will, so it skips the write-ahead
    log (half the writes of a ten-million-row build). A server crash empties it; Dagster then
    rebuilds it in full (price_platform.defs.features.refresh).

    The post-hooks also write each column's comment from the data set description
    (`features_columns`) and analyse the table, so the tests that follow are planned on its
    real row counts and value distributions rather than on defaults.
-#}
{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        on_schema_change='fail',
        unlogged=true,
        pre_hook="{% if is_incremental() %}delete from {{ this }} where {{ in_partition_window('partition_key') }}{% endif %}",
        post_hook=[
            "{% if var('dataset_hash', none) %}comment on table {{ this }} is {{ partition_literal(description_comment(var('dataset_hash'))) }}{% endif %}",
            "{{ comment_on_features_columns(this) }}",
            "analyze {{ this }}",
        ],
        indexes=[{'columns': ['partition_key']}, {'columns': ['record_id']}],
    )
}}
{%- set spec = dataset() -%}

with sales as (

    select * from {{ ref('int_sales_enriched') }}
    where {{ in_partition_window('partition_key') }}

),

{#- computed once (one pass over the sales), then hash-joined once per segment -#}
prior_prices as materialized (

    select * from {{ ref('int_segment_prices_accumulated') }}

),

final as (

    select
        sales.record_id,
        sales.partition_key,
        sales.sale_month,
        sales.arrival_seq,
        {%- for column in spec.numeric + spec.categorical + (spec.derived | list) %}
        sales.{{ adapter.quote(column) }},
        {%- endfor %}
        sales.{{ adapter.quote(spec.target) }}
        {%- for segment in spec.segments %}
        {%- set prior = 'prior_' ~ loop.index %},
        {{ prior }}.prior_sales as {{ adapter.quote('prior_sales_by_' ~ segment) }},
        {{ prior }}.prior_mean_price as {{ adapter.quote('prior_mean_' ~ spec.target ~ '_by_' ~ segment) }}
        {%- if spec.area_column %},
        {{ prior }}.prior_price_per_area as {{ adapter.quote('prior_price_per_area_by_' ~ segment) }}
        {%- endif %}
        {%- endfor %}
    from sales
    {%- for segment in spec.segments %}
    {%- set prior = 'prior_' ~ loop.index %}
    left join prior_prices as {{ prior }}
        on {{ prior }}.segment_column = '{{ segment }}'
        {#- null matches null, written as two equalities so PostgreSQL can hash-join -#}
        and coalesce({{ prior }}.segment_value, '') = coalesce(cast(sales.{{ adapter.quote(segment) }} as text), '')
        and ({{ prior }}.segment_value is null) = (sales.{{ adapter.quote(segment) }} is null)
        and {{ prior }}.period_start = sales.period_start
    {%- endfor %}

)

select * from final
