-- The prediction log keeps each record's features as the JSON text the API sent (json, not jsonb).
-- Parsing every logged record into jsonb was most of PostgreSQL's work on the log: about 70 ms of a
-- core per 1,000 records of the Ames data set against about 25 ms as json, taken from the core the
-- API's booster thread runs on. The one reader that compares features (live_performance's match of
-- a logged request with a later sale) casts them to jsonb itself.
alter table monitoring.predictions alter column features type json using features::json;
