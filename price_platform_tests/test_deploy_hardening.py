"""The deployment's guards, run for real where no Docker engine is needed.

- the reverse proxy (a real nginx with deploy/nginx/nginx.conf, upstreams pointed at local
  stubs): TLS on every published port, basic auth in front of MLflow and Dagster, ``/metrics``
  not served publicly;
- PostgreSQL (a throwaway embedded server, passwords checked by scram): deploy/postgres/init.sql
  makes one role per service and migration 012 gives the API and the exporter only their grants;
- Redis (a real redis-server with the ACL file of deploy/make-secrets.sh): the default user is
  off and the platform's user reaches only the platform's keys and channels;
- the compose file: only the proxy publishes ports, the API has 30 s to stop, each service
  connects as its own role.
"""

from __future__ import annotations

import http.server
import os
import re
import shutil
import ssl
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg2
import pytest
import redis
import yaml
from conftest import free_port, wait_for_port, which

from price_platform.operations.backup import client as pg_client
from price_platform.postgres import EmbeddedPostgres
from price_platform.registry.announce import announce_champion, promotion_channel
from price_platform.warehouse import migrate

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
NGINX_CONF = (ROOT / "deploy" / "nginx" / "nginx.conf").read_text()


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The secret files deploy/make-secrets.sh writes, in a throwaway copy of deploy/."""
    which("openssl")
    deploy = tmp_path_factory.mktemp("deploy") / "deploy"
    (deploy / "secrets").mkdir(parents=True)
    shutil.copy(ROOT / "deploy" / "make-secrets.sh", deploy)
    subprocess.run(["sh", str(deploy / "make-secrets.sh"), "localhost"], check=True, capture_output=True)
    return deploy / "secrets"


def _read(secrets: Path, name: str) -> str:
    return (secrets / name).read_text().strip()


# --- compose ---------------------------------------------------------------------------------


def test_only_the_proxy_publishes_ports_and_every_one_is_tls():
    published = {name: service["ports"] for name, service in COMPOSE["services"].items() if service.get("ports")}
    assert set(published) == {"lb"}
    listening = {int(port): "ssl" in flags for port, flags in re.findall(r"listen (\d+)( ssl)?;", NGINX_CONF)}
    for mapping in published["lb"]:
        host, container = (int(part) for part in mapping.split(":"))
        assert listening.get(container) is True, f"published port {host} is not a TLS server of nginx.conf"


def test_the_api_gets_30_seconds_to_stop_and_each_service_its_own_database_role():
    services = COMPOSE["services"]
    assert services["api"]["stop_grace_period"] == "30s"

    def url_secret(name: str) -> str:
        [source] = [s["source"] for s in services[name]["secrets"]
                    if isinstance(s, dict) and s.get("target") == "PRICE_PLATFORM_DATABASE_URL"]
        return source

    assert url_secret("api") == "api_database_url"
    assert url_secret("exporter") == "readonly_database_url"
    assert url_secret("dagster-daemon") == url_secret("dagster-webserver") == url_secret("migrate") == "owner_database_url"
    assert "MLFLOW_BACKEND_STORE_URI" in services["mlflow"]["secrets"]
    holders = {name for name, service in services.items()
               for s in service.get("secrets", []) if (s if isinstance(s, str) else s["source"]) == "postgres_password"}
    assert holders == {"postgres"}  # the superuser's password reaches no service
    assert "--aclfile" in services["redis"]["command"] and "redis_acl" in services["redis"]["secrets"]


# --- nginx -----------------------------------------------------------------------------------


class _Stub(http.server.BaseHTTPRequestHandler):
    """An upstream that answers every path with its own name (and the Host it was sent)."""

    name = "stub"

    def do_GET(self) -> None:  # noqa: N802
        body = f"{self.name} {self.path} host={self.headers.get('Host')}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def proxy(secrets: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A real nginx running deploy/nginx/nginx.conf on free ports, its upstreams local stubs."""
    nginx = which("nginx")
    folder = tmp_path_factory.mktemp("nginx")
    stubs = {}
    servers = []
    for upstream in ("api:8000", "mlflow:5000", "dagster-webserver:3000", "grafana:3000"):
        handler = type("Stub", (_Stub,), {"name": upstream.split(":")[0]})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        stubs[upstream] = f"127.0.0.1:{server.server_address[1]}"
    conf = NGINX_CONF.replace("/run/secrets/", f"{secrets}/")
    for upstream, local in stubs.items():
        conf = conf.replace(f"http://{upstream}", f"http://{local}")
    ports = {}
    for port in re.findall(r"listen (\d+)", NGINX_CONF):
        ports[port] = str(free_port())
        conf = conf.replace(f"listen {port}", f"listen 127.0.0.1:{ports[port]}")
    conf = conf.replace("worker_processes auto;", "worker_processes 1;")
    if os.geteuid() == 0:  # workers run as this user, who can read the test's private folders
        conf = "user root;\n" + conf
    version = subprocess.run([nginx, "-v"], capture_output=True, text=True).stderr
    if tuple(map(int, re.search(r"nginx/(\d+)\.(\d+)", version).groups())) < (1, 25):
        conf = conf.replace("http2 on;", "")  # the directive is 1.25+ (compose runs nginx 1.27; Debian 12 has 1.22)
    (folder / "nginx.conf").write_text(conf)
    globals_ = f"daemon off; pid {folder}/nginx.pid; error_log {folder}/error.log;"
    check = subprocess.run([nginx, "-t", "-p", str(folder), "-c", str(folder / "nginx.conf"), "-g", globals_],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    process = subprocess.Popen([nginx, "-p", str(folder), "-c", str(folder / "nginx.conf"), "-g", globals_])
    try:
        for port in ports.values():
            wait_for_port(int(port), timeout=30, process=process)
        yield ports
    finally:
        process.terminate()
        process.wait(10)
        for server in servers:
            server.shutdown()


def _https(port: str, path: str, **options) -> httpx.Response:
    return httpx.get(f"https://localhost:{port}{path}", verify=False, timeout=10, **options)


def test_the_api_is_served_over_tls_without_metrics(proxy) -> None:
    answer = _https(proxy["8443"], "/predict-info")
    assert answer.status_code == 200 and answer.text.startswith("api /predict-info")
    assert _https(proxy["8443"], "/metrics").status_code == 404
    assert _https(proxy["8443"], "/metrics/").status_code == 404
    plain = httpx.get(f"http://127.0.0.1:{proxy['8443']}/health", timeout=5)  # no plain HTTP on a published port
    assert plain.status_code == 400 and "plain HTTP request was sent to HTTPS port" in plain.text


def test_mlflow_and_dagster_need_the_ui_login(proxy, secrets: Path) -> None:
    login = ("admin", _read(secrets, "ui_password"))
    for port, upstream in ((proxy["5443"], "mlflow"), (proxy["3443"], "dagster")):
        assert _https(port, "/").status_code == 401
        assert _https(port, "/", auth=("admin", "wrong")).status_code == 401
        answer = _https(port, "/api/2.0/mlflow/experiments/search", auth=login)
        assert answer.status_code == 200 and answer.text.startswith(upstream), answer.text
    assert "host=mlflow:5000" in _https(proxy["5443"], "/", auth=login).text  # on MLflow's --allowed-hosts
    assert _https(proxy["3001"], "/login").text.startswith("grafana")
    context = ssl.create_default_context(cafile=str(secrets / "tls.crt"))
    assert httpx.get(f"https://localhost:{proxy['3001']}/", verify=context, timeout=10).status_code == 200


# --- PostgreSQL roles ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def roles(secrets: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A throwaway server initialised by deploy/postgres/init.sql, migrated as the owner; role -> DSN."""
    folder = tmp_path_factory.mktemp("roles")
    server = EmbeddedPostgres(folder / "data", free_port())
    server.start()
    try:
        superuser = f"postgresql://postgres@127.0.0.1:{server.port}/postgres"
        subprocess.run(
            [pg_client("psql"), superuser, "--no-psqlrc", "-q", "-f", str(ROOT / "deploy" / "postgres" / "init.sql")],
            env={**os.environ, "SECRETS_DIR": str(secrets)}, check=True, capture_output=True, text=True,
        )
        # From now on only the superuser is trusted; every service role must give its password.
        (folder / "data" / "pg_hba.conf").write_text(
            "local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
        )
        with psycopg2.connect(superuser) as connection, connection.cursor() as cursor:
            cursor.execute("select pg_reload_conf()")
        dsns = {
            role: f"postgresql://price_platform_{role}:{_read(secrets, f'pg_{role}_password')}@127.0.0.1:{server.port}/"
            + ("price_platform_mlflow" if role == "mlflow" else "price_platform")
            for role in ("owner", "api", "readonly", "mlflow")
        }
        migrate(dsns["owner"])
        yield dsns
    finally:
        server.stop()


def _database(dsn: str, name: str) -> str:
    return f"{dsn.rsplit('/', 1)[0]}/{name}"


def _run(dsn: str, statement: str, params: tuple = ()) -> list[tuple]:
    with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def test_each_role_needs_its_password(roles) -> None:
    wrong = re.sub(r":[0-9a-f]{48}@", ":not-the-password@", roles["api"])
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(wrong)


def test_the_api_role_has_only_the_grants_it_needs(roles) -> None:
    api = roles["api"]
    assert migrate(api) == []  # the schema is up to date: no DDL is attempted
    _run(api, "insert into monitoring.predictions (prediction_id, created_at, model_version, features, prediction)"
              " values (%s, now(), '1', '{}', 1.0)", (str(uuid.uuid4()),))
    _run(api, "insert into model_registry.audit_log (actor, action) values ('api-key:x', 'reload')")
    for table in ("model_registry.api_keys", "model_registry.deployments", "model_registry.artifact_digests"):
        _run(api, f"select count(*) from {table}")
    refused = [
        "delete from model_registry.api_keys",
        "insert into model_registry.api_keys (key_id, key_hash, role) values ('k', 'h', 'admin')",
        "insert into model_registry.artifact_digests (model_name, version, path, sha256, size_bytes)"
        " values ('m', '1', 'MLmodel', repeat('0', 64), 1)",
        "delete from monitoring.predictions",
        "select count(*) from price_data.loads",
        "create table monitoring.planted (x int)",
        "drop table model_registry.deployments",
    ]
    for statement in refused:
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            _run(api, statement)
    with pytest.raises(psycopg2.OperationalError, match="permission denied for database"):
        psycopg2.connect(_database(api, "price_platform_mlflow"))


def test_the_exporter_reads_and_the_owner_runs_the_platform(roles) -> None:
    readonly, owner = roles["readonly"], roles["owner"]
    _run(owner, "create table monitoring.made_later (x int)")  # e.g. a partition the monitoring job makes
    for table in ("monitoring.predictions", "model_registry.deployments", "price_data.loads", "monitoring.made_later"):
        _run(readonly, f"select count(*) from {table}")
    for statement in ("select key_hash from model_registry.api_keys", "insert into monitoring.made_later values (1)",
                      "delete from model_registry.deployments"):
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            _run(readonly, statement)
    _run(roles["mlflow"], "create table runs_probe (x int)")  # MLflow owns its database
    with pytest.raises(psycopg2.OperationalError, match="permission denied for database"):
        psycopg2.connect(_database(roles["mlflow"], "price_platform"))


# --- Redis ACL -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def acl_redis(secrets: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    folder = tmp_path_factory.mktemp("redis")
    port = free_port()
    process = subprocess.Popen([which("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--dir", str(folder), "--aclfile", str(secrets / "redis_acl")],
                               stdout=subprocess.DEVNULL)
    try:
        wait_for_port(port, timeout=30, process=process)
        yield port
    finally:
        process.terminate()
        process.wait(10)


def test_redis_admits_only_the_platform_user_to_the_platform_keys(acl_redis: int, secrets: Path) -> None:
    url = _read(secrets, "PRICE_PLATFORM_REDIS_URL").replace("@redis:6379", f"@127.0.0.1:{acl_redis}")
    with redis.Redis(port=acl_redis) as anonymous, pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    with redis.Redis.from_url(url) as platform:
        platform.set("price-platform:cache:probe", b"1", ex=10)
        assert platform.get("price-platform:cache:probe") == b"1"
        assert platform.incrby("price-platform:rate:probe", 2) == 2
        with pytest.raises(redis.exceptions.NoPermissionError):
            platform.set("someone-elses-key", b"x")
        with pytest.raises(redis.exceptions.NoPermissionError):
            platform.flushall()
    with redis.Redis.from_url(url) as listener:
        pubsub = listener.pubsub()
        pubsub.subscribe(promotion_channel("probe-model"))
        assert pubsub.get_message(timeout=5)["type"] == "subscribe"
        assert announce_champion(url, "probe-model", "3") == 1  # the champion announcement reaches a server
        with pytest.raises(redis.exceptions.NoPermissionError):
            listener.publish("someone-elses-channel", "x")
        pubsub.close()
    with redis.Redis(port=acl_redis, username="healthcheck", password="none") as probe:
        assert probe.ping()
        with pytest.raises(redis.exceptions.NoPermissionError):
            probe.get("price-platform:cache:probe")
