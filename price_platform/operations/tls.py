"""TLS for the API by configuration: ``tls_cert_file`` and ``tls_key_file`` turn uvicorn into HTTPS.

:func:`uvicorn_tls` is what a server passes to ``uvicorn.Config``; it checks the pair before
the server binds, so a wrong configuration stops the start with a message instead of
serving plain HTTP or failing on the first handshake.
"""

from __future__ import annotations

import ssl

from price_platform.settings import Settings


class TLSConfigError(ValueError):
    """A certificate/key configuration that cannot serve HTTPS, with the reason."""


def uvicorn_tls(settings: Settings) -> dict[str, str]:
    """``ssl_certfile``/``ssl_keyfile`` for ``uvicorn.Config``; empty when TLS is not configured."""
    cert, key = settings.tls_cert_file, settings.tls_key_file
    if cert is None and key is None:
        return {}
    if cert is None or key is None:
        missing = "PRICE_PLATFORM_TLS_CERT_FILE" if cert is None else "PRICE_PLATFORM_TLS_KEY_FILE"
        raise TLSConfigError(f"TLS needs both a certificate and a key: {missing} is not set")
    for path in (cert, key):
        if not path.is_file():
            raise TLSConfigError(f"TLS file {path} does not exist")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(certfile=str(cert), keyfile=str(key))
    except ssl.SSLError as error:
        raise TLSConfigError(f"TLS certificate {cert} and key {key} cannot be used together: {error.reason or error}") from error
    return {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
