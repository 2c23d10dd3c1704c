"""Who may call what: the caller's API key and role, the per-key rate limit, and a limit on 401 answers.

An address whose requests were refused ``unauthorized_per_minute`` times in a minute (no key
or a wrong one) gets 429 for the rest of that minute instead of 401: guessing keys is slowed,
and its requests stop asking for reads of the key table. Valid keys from that address still work.

:func:`requires` makes a ``before_request`` hook for a controller. (Not a Litestar guard: Litestar
copies the route handler object for every guard call, which costs more than the check itself.)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import NoReturn

from litestar import Request
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException, TooManyRequestsException

from serving import metrics
from serving.auth import ANONYMOUS_ADMIN, HEADER, Principal
from serving.services import Services


async def _principal(request: Request, services: Services) -> Principal:
    if not services.settings.auth_enabled:
        return ANONYMOUS_ADMIN
    presented = request.headers.get(HEADER)
    principal = services.keys.check(presented)
    if principal is None and presented:
        await services.keys.refresh_after_miss()  # a key created since the last read
        principal = services.keys.check(presented)
    if principal is None:
        await _refuse(request, services)
    return principal


async def _refuse(request: Request, services: Services) -> NoReturn:
    """Raise 401, or 429 once this address was refused ``unauthorized_per_minute`` times this minute."""
    address = request.client.host if request.client else "unknown"
    limit = services.settings.unauthorized_per_minute
    allowed, retry_after = await services.shared.allow(f"unauthorized:{address}", limit=limit)
    if not allowed:
        metrics.RATE_LIMITED.inc()
        raise TooManyRequestsException(
            f"more than {limit} requests without a valid API key from this address this minute",
            headers={"Retry-After": str(retry_after)},
        )
    raise NotAuthorizedException(f"a valid API key is required in the {HEADER} header")


def requires(role: str) -> Callable[[Request], Awaitable[None]]:
    """A hook admitting keys with ``role`` (or ``admin``); prediction roles are also rate-limited."""

    async def check(request: Request) -> None:
        services: Services = request.app.state.services
        principal = await _principal(request, services)
        if not principal.may(role):
            raise PermissionDeniedException(f"this API key has the role {principal.role!r}; {role!r} is needed")
        request.state.principal = principal
        if role == "predict":
            identity = principal.key_id or (request.client.host if request.client else "anonymous")
            allowed, retry_after = await services.shared.allow(identity)
            if not allowed:
                metrics.RATE_LIMITED.inc()
                raise TooManyRequestsException(
                    f"rate limit of {services.settings.rate_limit_per_minute} requests per minute reached",
                    headers={"Retry-After": str(retry_after)},
                )

    check.__name__ = f"requires_{role}"
    check.role = role  # type: ignore[attr-defined]  (serving.openapi documents the key check from it)
    return check
