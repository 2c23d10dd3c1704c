-- Whether an answer was capped to the model's price band (learned from the training target):
-- the record's values extrapolated beyond any price the model was trained on.
alter table monitoring.predictions add column if not exists capped boolean not null default false;
