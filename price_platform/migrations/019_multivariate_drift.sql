-- Multivariate drift beside the per-feature report: the PCA reconstruction error of the partition,
-- the threshold learned on the reference for its size, and whether it was exceeded
-- (price_platform.monitoring.multivariate).
alter table monitoring.drift_summaries
    add column multivariate_error     double precision,
    add column multivariate_threshold double precision,
    add column multivariate_drifted   boolean;
