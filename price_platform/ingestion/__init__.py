"""Getting sales records into ``price_data.raw_sales``: read a source, type its rows, load a partition."""
