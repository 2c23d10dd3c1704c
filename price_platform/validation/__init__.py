"""Great Expectations validation of sales records, with the suite derived from the data set description."""
