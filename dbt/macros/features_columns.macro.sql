{#-
    The columns of the `features` mart as the data set description makes them, in table order:
    a list of {name, data_type, description}. The model writes these columns; this macro is
    what documents them (`comment_on_features_columns`, run as the model's post-hook, so
    `dbt docs generate` shows each column's comment from the catalog) and what tests them
    (`tests/assert_features_columns_follow_the_description.sql`). The YAML properties only
    name the fixed columns, since the others differ between data sets.
-#}
{% macro features_columns(spec) %}
    {%- set columns = [
        {'name': 'record_id', 'data_type': 'text',
         'description': 'The record id: the data set id column as text, else partition/file#row.'},
        {'name': 'partition_key', 'data_type': 'text',
         'description': 'Partition of the sale: its month (YYYY-MM-01), or the arrival batch without time.'},
        {'name': 'sale_month', 'data_type': 'date',
         'description': 'First day of the sale month; null when the data set has no time column.'},
        {'name': 'arrival_seq', 'data_type': 'bigint',
         'description': 'Arrival order: loads in ingestion order, then row number in the file (unique, with gaps).'},
    ] -%}
    {%- for column in spec.numeric -%}
        {%- do columns.append({'name': column, 'data_type': 'double precision',
                               'description': 'Numeric feature ' ~ column ~ ' of the data set description.'}) -%}
    {%- endfor -%}
    {%- for column in spec.categorical -%}
        {%- do columns.append({'name': column, 'data_type': 'text',
                               'description': 'Categorical feature ' ~ column ~ ' of the data set description.'}) -%}
    {%- endfor -%}
    {%- for name, expression in spec.derived.items() -%}
        {%- do columns.append({'name': name, 'data_type': 'double precision',
                               'description': 'Derived feature: ' ~ expression ~ '.'}) -%}
    {%- endfor -%}
    {%- do columns.append({'name': spec.target, 'data_type': 'double precision',
                           'description': 'The target, above ' ~ spec.target_min ~ '.'}) -%}
    {%- for segment in spec.segments -%}
        {%- set earlier = ' of the sales of strictly earlier periods with the same ' ~ segment ~ ' (analysis only).' -%}
        {%- do columns.append({'name': 'prior_sales_by_' ~ segment, 'data_type': 'bigint',
                               'description': 'Number' ~ earlier}) -%}
        {%- do columns.append({'name': 'prior_mean_' ~ spec.target ~ '_by_' ~ segment, 'data_type': 'double precision',
                               'description': 'Mean ' ~ spec.target ~ earlier}) -%}
        {%- if spec.area_column -%}
            {%- do columns.append({'name': 'prior_price_per_area_by_' ~ segment, 'data_type': 'double precision',
                                   'description': spec.target ~ ' per ' ~ spec.area_column ~ earlier}) -%}
        {%- endif -%}
    {%- endfor -%}
    {{ return(columns) }}
{% endmacro %}

{#- `comment on column` for every column of `features_columns`: the mart documented in the catalog. -#}
{% macro comment_on_features_columns(relation) %}
    {%- for column in features_columns(dataset()) %}
    comment on column {{ relation }}.{{ adapter.quote(column.name) }} is {{ partition_literal(column.description) }};
    {%- endfor %}
{% endmacro %}
