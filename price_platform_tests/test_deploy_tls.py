"""HTTPS for the API by configuration: a self-signed certificate, the real app under uvicorn."""

from __future__ import annotations

import datetime
import ipaddress
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from conftest import free_port, wait_for_port
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from price_platform.operations.tls import TLSConfigError, uvicorn_tls
from price_platform.settings import Settings


def make_certificate(folder: Path, name: str = "server") -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def test_price_platform_serve_answers_https_with_the_configured_certificate(settings, postgres, tmp_path):
    cert, key = make_certificate(tmp_path)
    port = free_port()
    env = {
        **os.environ,
        "PRICE_PLATFORM_DATABASE_URL": settings.database_url,
        "PRICE_PLATFORM_DATABASE_NAME": settings.database_name,
        "PRICE_PLATFORM_HOME": str(settings.home),
        "PRICE_PLATFORM_AUTH_ENABLED": "false",
        "PRICE_PLATFORM_TLS_CERT_FILE": str(cert),
        "PRICE_PLATFORM_TLS_KEY_FILE": str(key),
    }
    log = (tmp_path / "api.log").open("w")
    command = [str(Path(sys.executable).parent / "price-platform"), "serve", "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_port(port, timeout=180, process=process)
        response = httpx.get(f"https://127.0.0.1:{port}/health", verify=str(cert), timeout=30)
        assert response.status_code == 200
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"https://127.0.0.1:{port}/health", timeout=30)  # not trusted without the certificate
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=30)  # plain HTTP is not served
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


def test_tls_is_off_without_certificate_settings():
    assert uvicorn_tls(Settings()) == {}


def test_tls_refuses_half_a_configuration(tmp_path):
    cert, key = make_certificate(tmp_path)
    with pytest.raises(TLSConfigError, match="PRICE_PLATFORM_TLS_KEY_FILE is not set"):
        uvicorn_tls(Settings(tls_cert_file=cert))
    with pytest.raises(TLSConfigError, match="PRICE_PLATFORM_TLS_CERT_FILE is not set"):
        uvicorn_tls(Settings(tls_key_file=key))


def test_tls_refuses_missing_files_and_a_key_of_another_certificate(tmp_path):
    cert, _ = make_certificate(tmp_path, "one")
    _, other_key = make_certificate(tmp_path, "two")
    with pytest.raises(TLSConfigError, match="does not exist"):
        uvicorn_tls(Settings(tls_cert_file=tmp_path / "gone.crt", tls_key_file=other_key))
    with pytest.raises(TLSConfigError, match="cannot be used together"):
        uvicorn_tls(Settings(tls_cert_file=cert, tls_key_file=other_key))
    (tmp_path / "junk.crt").write_text("not a certificate")
    with pytest.raises(TLSConfigError, match="cannot be used together"):
        uvicorn_tls(Settings(tls_cert_file=tmp_path / "junk.crt", tls_key_file=other_key))


def test_a_configured_pair_gives_uvicorn_its_options(tmp_path):
    cert, key = make_certificate(tmp_path)
    assert uvicorn_tls(Settings(tls_cert_file=cert, tls_key_file=key)) == {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
