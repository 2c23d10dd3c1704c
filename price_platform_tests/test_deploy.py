"""The Docker packaging, checked without a Docker engine.

The compose file is validated against the compose specification's JSON schema (vendored
by ``check-jsonschema``); every command it runs in the platform image exists with the
options it passes; every ``PRICE_PLATFORM_*`` variable it sets is a setting (or read by
``dagster.yaml``); every file, secret and volume it names exists or is declared; every
long-running service has a health check and a restart policy; no secret is a literal.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
import yaml

from price_platform.cli import COMMANDS
from price_platform.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
IMAGE = "price-platform:latest"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def platform_services(compose: dict) -> dict[str, dict]:
    return {name: service for name, service in compose["services"].items() if service.get("image") == IMAGE}


def long_running(services: dict[str, dict]) -> dict[str, dict]:
    """The services that keep running (not the one-shot jobs: bucket creation, migrations)."""
    return {name: service for name, service in services.items() if service.get("restart") != "on-failure"}


def compose_schema() -> dict:
    path = resources.files("check_jsonschema") / "builtin_schemas" / "vendor" / "compose-spec.json"
    return json.loads(path.read_text(encoding="utf-8"))


def schema_errors(document: dict) -> list[str]:
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(document)]


def test_the_compose_file_meets_the_compose_specification(compose):
    assert schema_errors(compose) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda doc: doc["services"]["api"].__setitem__("restart", 3), "3 is not of type 'string'"),
        (lambda doc: doc["services"]["redis"].__setitem__("healthcheck", {"test": ["CMD"], "intervall": "5s"}), "intervall"),
        (lambda doc: doc["services"].__setitem__("bad name!", {"image": "x"}), "bad name!"),
    ],
)
def test_the_schema_check_catches_a_broken_compose_file(compose, change, message):
    broken = json.loads(json.dumps(compose))
    change(broken)
    errors = schema_errors(broken)
    assert errors and any(message in error for error in errors), errors


def test_every_long_running_service_has_a_health_check_and_restart_policy(compose):
    for name, service in compose["services"].items():
        if service.get("restart") == "on-failure":  # one-shot jobs (bucket creation, migrations)
            assert service.get("healthcheck", {}).get("disable") is True, name
            continue
        assert service.get("restart") in {"always", "unless-stopped"}, name
        assert service.get("healthcheck", {}).get("test"), name


def test_references_between_services_secrets_volumes_and_files_hold(compose):
    services = compose["services"]
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
        for secret in service.get("secrets", []):
            assert (secret if isinstance(secret, str) else secret["source"]) in compose["secrets"], f"{name}: {secret}"
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in compose["volumes"], f"{name} uses undeclared volume {source}"
    for secret in compose["secrets"].values():
        assert secret["file"].startswith("deploy/secrets/")


def test_no_secret_is_a_literal(compose):
    secretive = re.compile(r"PASSWORD|SECRET|TOKEN|DATABASE_URL|STORAGE_URL|STORE_URI|ACCESS_KEY", re.IGNORECASE)
    for name, service in compose["services"].items():
        for variable, value in (service.get("environment") or {}).items():
            if secretive.search(variable):
                assert variable.endswith("_FILE") or str(value).startswith("/run/secrets/"), f"{name}: {variable}"
            assert not re.search(r"://[^/@\s]+:[^/@\s]+@", str(value)), f"{name}: {variable} holds credentials"


def _environment_names(compose: dict) -> set[str]:
    names = set()
    for service in platform_services(compose).values():
        names |= set(service.get("environment") or {})
        names |= {secret if isinstance(secret, str) else secret.get("target", secret["source"]) for secret in service.get("secrets", [])}
    return names


def test_every_platform_variable_of_the_compose_file_is_a_setting(compose):
    fields = set(Settings.model_fields)
    read_elsewhere = (ROOT / "dagster.yaml").read_text()
    names = {name for name in _environment_names(compose) if name.startswith("PRICE_PLATFORM_")}
    assert names, "the compose file configures the platform through PRICE_PLATFORM_* variables"
    for name in names:
        field = name.removeprefix("PRICE_PLATFORM_").lower()
        assert field in fields or name in read_elsewhere, f"{name} is neither a setting nor read by dagster.yaml"


def test_the_compose_environment_makes_valid_settings(compose, monkeypatch):
    configured = [s for s in platform_services(compose).values() if "PRICE_PLATFORM_HOME" in (s.get("environment") or {})]
    assert len(configured) >= 4  # webserver, daemon, api, exporter
    for service in configured:
        with monkeypatch.context() as patch:
            for variable, value in service["environment"].items():
                patch.setenv(variable, str(value))
            patch.setenv("PRICE_PLATFORM_DATABASE_URL", "postgresql+psycopg2://postgres:pw@postgres:5432/postgres")
            settings = Settings()
        assert settings.database_name == "price_platform"
        assert settings.mlflow_tracking_uri == "http://mlflow:5000"
        assert settings.artifact_bucket_uri == "s3://mlflow/artifacts"
        assert settings.redis_url is None  # a secret file (it holds the Redis password), not an environment literal


def _help(command: list[str]) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, f"{command}: {result.stderr[-2000:]}"
    return result.stdout


def test_every_command_the_compose_file_runs_exists_with_its_options(compose):
    commands = [service["command"] for service in platform_services(compose).values()]
    commands += [service["healthcheck"]["test"][1:] for service in long_running(platform_services(compose)).values()]
    for command in commands:
        program, *args = command
        if program == "python" and args[0] == "-m":  # a module of the package (the migrations job)
            assert importlib.util.find_spec(args[1]) is not None, f"no module {args[1]}"
            continue
        if program == "python":
            continue  # health probes: python -c "urllib ..." (checked by the URL test below)
        if program == "price-platform":
            from price_platform.cli import main

            assert args[0] in COMMANDS, f"price-platform has no sub-command {args[0]!r}"
            with pytest.raises(SystemExit) as exit_info:  # argparse parses the real options, then --help exits 0
                main([*args, "--help"])
            assert exit_info.value.code == 0
            continue
        assert (BIN / program).exists(), f"{program} is not installed"
        subcommands = [arg for arg in args if not arg.startswith("-")][:1] if program in {"mlflow", "dagster-daemon"} else []
        text = _help([str(BIN / program), *subcommands, "--help"])
        for option in (arg.split("=", 1)[0] for arg in args if arg.startswith("--")):
            assert option in text, f"{program} {' '.join(subcommands)} has no option {option}"


def test_the_health_probes_ask_urls_the_services_serve(compose):
    probes = {name: " ".join(service["healthcheck"]["test"]) for name, service in long_running(platform_services(compose)).items()}
    assert "/health" in probes["api"] and "/health" in probes["mlflow"]
    assert "/server_info" in probes["dagster-webserver"]
    from serving.app import create_app

    paths = {route.path for route in create_app(Settings(auth_enabled=False)).routes}
    assert "/health" in paths


def test_the_dockerfile_copies_files_that_exist_and_runs_the_entrypoint():
    text = (ROOT / "Dockerfile").read_text()
    for line in text.splitlines():
        if line.startswith("COPY") and "--from" not in line:
            sources = [part for part in line.split()[1:-1] if not part.startswith("--")]
            for source in sources:
                assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"
    assert "ENTRYPOINT [\"/usr/local/bin/entrypoint.sh\"]" in text
    assert os.access(ROOT / "deploy" / "entrypoint.sh", os.X_OK)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "deploy/secrets" in ignored and ".venv" in ignored


def test_the_entrypoint_turns_secret_files_into_variables(tmp_path):
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "PRICE_PLATFORM_DATABASE_URL").write_text("postgresql+psycopg2://postgres:s3cr3t@postgres:5432/postgres\n")
    (secrets / "AWS_SECRET_ACCESS_KEY").write_text("key")
    (secrets / "postgres_password").write_text("not-a-variable")
    result = subprocess.run(
        [str(ROOT / "deploy" / "entrypoint.sh"), "env"],
        env={"PATH": os.environ["PATH"], "SECRETS_DIR": str(secrets)},
        capture_output=True, text=True, check=True,
    )
    variables = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    assert variables["PRICE_PLATFORM_DATABASE_URL"] == "postgresql+psycopg2://postgres:s3cr3t@postgres:5432/postgres"
    assert variables["AWS_SECRET_ACCESS_KEY"] == "key"
    assert "postgres_password" not in variables


def test_make_secrets_writes_every_secret_file_the_compose_file_needs(compose, tmp_path):
    from conftest import which

    which("openssl")
    deploy = tmp_path / "deploy"
    (deploy / "secrets").mkdir(parents=True)
    shutil.copy(ROOT / "deploy" / "make-secrets.sh", deploy)
    subprocess.run(["sh", str(deploy / "make-secrets.sh"), "prices.example.com"], check=True, capture_output=True)
    for secret in compose["secrets"].values():
        path = tmp_path / secret["file"]
        assert path.is_file() and path.stat().st_size > 0, secret["file"]
    secrets = deploy / "secrets"
    for role in ("owner", "api", "readonly"):  # one role per service, each URL with that role's password
        url = (secrets / f"{role}_database_url").read_text().strip()
        assert url.startswith(f"postgresql+psycopg2://price_platform_{role}:{(secrets / f'pg_{role}_password').read_text().strip()}@")
    mlflow = (secrets / "mlflow_backend_store_uri").read_text().strip()
    assert mlflow.startswith("postgresql+psycopg2://price_platform_mlflow:") and mlflow.endswith("/price_platform_mlflow")
    redis_password = (secrets / "redis_password").read_text().strip()
    assert (secrets / "PRICE_PLATFORM_REDIS_URL").read_text().strip() == f"redis://platform:{redis_password}@redis:6379/0"
    assert f"user platform on >{redis_password} ~price-platform:*" in (secrets / "redis_acl").read_text()
    assert "user default off" in (secrets / "redis_acl").read_text()
    user, hashed = (secrets / "ui_htpasswd").read_text().strip().split(":", 1)
    ui_password = (secrets / "ui_password").read_text().strip()
    assert user == "admin" and hashed.startswith("$apr1$") and ui_password not in hashed
    salt = hashed.split("$")[2]
    rehashed = subprocess.run(["openssl", "passwd", "-apr1", "-salt", salt, ui_password], capture_output=True, text=True, check=True)
    assert rehashed.stdout.strip() == hashed
    first = {path.name: path.read_text() for path in secrets.iterdir()}
    subprocess.run(["sh", str(deploy / "make-secrets.sh")], check=True, capture_output=True)
    assert {path.name: path.read_text() for path in secrets.iterdir()} == first  # kept, not rotated
    subject = subprocess.run(
        ["openssl", "x509", "-noout", "-subject", "-in", str(deploy / "secrets" / "tls.crt")],
        capture_output=True, text=True, check=True,
    ).stdout
    assert "prices.example.com" in subject


def test_the_compose_prometheus_config_is_valid(tmp_path):
    from conftest import which

    promtool = which("promtool")
    config = (ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text()
    shutil.copy(ROOT / "grafana" / "prometheus" / "alerts.yml", tmp_path / "alerts.yml")
    (tmp_path / "prometheus.yml").write_text(config.replace("/etc/prometheus/alerts.yml", str(tmp_path / "alerts.yml")))
    result = subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_postgres_init_creates_the_platforms_databases():
    from price_platform.postgres import DATABASES

    text = (ROOT / "deploy" / "postgres" / "init.sql").read_text()
    name = Settings().database_name
    assert sorted(re.findall(r"create database (\w+) owner", text)) == sorted(name + suffix for suffix in DATABASES.values())


@pytest.mark.parametrize("name", ["kubernetes.yaml", "celery.yaml"])
def test_the_dagster_deployment_examples_keep_the_platforms_storage(name):
    example = yaml.safe_load((ROOT / "docs" / "dagster" / name).read_text())
    own = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    assert example["storage"] == own["storage"]
    assert example["run_launcher"]["class"] in {"K8sRunLauncher", "DefaultRunLauncher"}
    assert example["concurrency"]["pools"]["default_limit"] >= 1
