-- The SHA-256 of every file of a registered model version's artifact, recorded at registration.
-- The API, the promotion command and rollback compare the files they download against these rows
-- before loading anything: the MLflow artifact store may be writable by more people than this table.
create table model_registry.artifact_digests (
    model_name   text not null,
    version      text not null,
    path         text not null,          -- relative to the model's root, '/'-separated
    sha256       text not null check (sha256 ~ '^[0-9a-f]{64}$'),
    size_bytes   bigint not null,
    recorded_at  timestamptz not null default now(),
    primary key (model_name, version, path)
);
