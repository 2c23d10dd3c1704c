{#-
    The features table has exactly the columns `features_columns` derives from the data set
    description, in that order and with those types (the catalog read, not the rows). Returns
    each column that is missing, unexpected, out of place or of another type.
-#}
{{ config(meta={'dagster': {'ref': {'name': 'features'}}}) }}
-- depends_on: {{ ref('features') }}
{%- set expected = features_columns(dataset()) %}

with expected (column_name, ordinal_position, data_type) as (

    values
    {%- for column in expected %}
    ({{ partition_literal(column.name) }}, {{ loop.index }}, {{ partition_literal(column.data_type) }}){% if not loop.last %},{% endif %}
    {%- endfor %}

),

actual as (

    select column_name::text, ordinal_position::integer, data_type::text
    from information_schema.columns
    where table_schema = '{{ ref('features').schema }}' and table_name = '{{ ref('features').identifier }}'

)

select
    coalesce(expected.column_name, actual.column_name) as column_name,
    expected.ordinal_position as expected_position,
    actual.ordinal_position as actual_position,
    expected.data_type as expected_type,
    actual.data_type as actual_type
from expected
full join actual on actual.column_name = expected.column_name
where expected.column_name is null
    or actual.column_name is null
    or actual.ordinal_position <> expected.ordinal_position
    or actual.data_type <> expected.data_type
