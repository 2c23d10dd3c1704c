-- A DEFAULT partition for the prediction log, so that serving can always write a prediction:
-- rows for a month without its own partition land here. Month partitions are created ahead
-- of time by price_platform.monitoring.partitions, which moves such rows into them.
create table if not exists monitoring.predictions_default partition of monitoring.predictions default;
