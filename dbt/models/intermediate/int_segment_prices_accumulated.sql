{#-
    Per segment value and period: the sales, mean price and price per area of all STRICTLY
    EARLIER periods (the window ends one period before the current one), so a sale's segment
    statistics never include its own month or anything after it.
-#}

with segmented as (

    select * from {{ ref('int_sales_unpivoted_by_segment') }}

),

per_period as (

    select
        segment_column,
        segment_value,
        period_start,
        count(*) as sales,
        sum(price) as price_total,
        sum(price) filter (where area > 0) as priced_total,
        sum(area) filter (where area > 0) as area_total
    from segmented
    group by segment_column, segment_value, period_start

),

accumulated as (

    select
        segment_column,
        segment_value,
        period_start,
        cast(coalesce(sum(sales) over earlier_periods, 0) as bigint) as prior_sales,
        sum(price_total) over earlier_periods
            / cast(nullif(sum(sales) over earlier_periods, 0) as double precision) as prior_mean_price,
        sum(priced_total) over earlier_periods
            / nullif(sum(area_total) over earlier_periods, 0) as prior_price_per_area
    from per_period
    window earlier_periods as (
        partition by segment_column, segment_value
        order by period_start
        rows between unbounded preceding and 1 preceding
    )

)

select * from accumulated
