-- Which role answered a request: the champion, or the challenger answering its canary share
-- (the version is in model_version). A shadow's scores never answer: they are in
-- monitoring.rollout_predictions (027_rollout.sql).
alter table monitoring.predictions add column if not exists role text not null default 'champion'
    check (role in ('champion', 'canary'));
