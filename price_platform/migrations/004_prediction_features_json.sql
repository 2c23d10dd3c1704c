-- The prediction log keeps each record's features as the JSON text the API sent (json, not jsonb).
-- Parsing every logged record into jsonb was most of PostgreSQL's work on the log: 70-80 ms of a
-- core per 1,000 records of the Ames data set by COPY into jsonb, 22-30 ms into json, on a machine
-- where the database may share the API's cores. The one reader that compares features
-- (live_performance's match of a logged request with a later sale) casts them to jsonb itself.
alter table monitoring.predictions alter column features type json using features::json;
