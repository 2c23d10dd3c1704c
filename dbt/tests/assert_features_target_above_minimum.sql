{#- Every sale in the features has a target above the data set's `target_min`. -#}
{%- set spec = dataset() -%}

select record_id, {{ adapter.quote(spec.target) }}
from {{ ref('features') }}
where not ({{ adapter.quote(spec.target) }} > {{ spec.target_min }})
    or {{ adapter.quote(spec.target) }} is null
