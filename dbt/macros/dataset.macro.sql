{#- The data set description passed by Dagster as the `dataset` var (see dbt_project.yml). -#}
{% macro dataset() %}
    {%- set spec = var('dataset', none) -%}
    {%- if spec is none -%}
        {%- if execute -%}
            {{ exceptions.raise_compiler_error(
                "the `dataset` var is missing: run dbt through Dagster, or pass"
                " --vars from price_platform.defs.features.dataset_vars(spec)") }}
        {%- endif -%}
        {%- set spec = {'target': 'price', 'target_min': 0, 'id_column': none, 'time': none,
                        'numeric': [], 'categorical': [], 'other_columns': {}, 'derived': {},
                        'segments': [], 'area_column': none} -%}
    {%- endif -%}
    {{ return(spec) }}
{% endmacro %}

{#- SQL condition keeping the rows of the partition window (`min_partition`..`max_partition`). -#}
{% macro in_partition_window(column) %}
    {%- set low = var('min_partition', none) -%}
    {%- set high = var('max_partition', none) -%}
    {%- if low is none and high is none -%}
        true
    {%- else -%}
        {{ column }} between {{ partition_literal(low or high) }} and {{ partition_literal(high or low) }}
    {%- endif -%}
{% endmacro %}

{#- A partition key as a SQL string literal. -#}
{% macro partition_literal(key) -%}
    '{{ key | string | replace("'", "''") }}'
{%- endmacro %}

{#- The features table's comment: the hash of the data set description it was built from. -#}
{% macro description_comment(hash) -%}
    price_platform dataset description {{ hash }}
{%- endmacro %}
