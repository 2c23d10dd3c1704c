{#- Raw sales renamed and cast to the types the data set description gives; no logic. -#}
{%- set spec = dataset() -%}

with source as (

    select * from {{ source('price_data', 'raw_sales') }}

),

renamed as (

    select
        _load_id as load_id,
        _source as source_kind,
        _source_file as source_file,
        _row_number as source_row_number,
        _partition_key as partition_key,
        _ingested_at as ingested_at,
        {%- for column, sql_type in spec.other_columns.items() %}
        cast({{ adapter.quote(column) }} as {{ sql_type }}) as {{ adapter.quote(column) }},
        {%- endfor %}
        {%- for column in spec.numeric %}
        cast({{ adapter.quote(column) }} as double precision) as {{ adapter.quote(column) }},
        {%- endfor %}
        {%- for column in spec.categorical %}
        cast({{ adapter.quote(column) }} as text) as {{ adapter.quote(column) }},
        {%- endfor %}
        cast({{ adapter.quote(spec.target) }} as double precision) as {{ adapter.quote(spec.target) }}

    from source

)

select * from renamed
