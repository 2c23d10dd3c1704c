"""Who may call what: the caller's API key and role, and the per-key rate limit.

:func:`requires` makes a ``before_request`` hook for a controller. (Not a Litestar guard: Litestar
copies the route handler object for every guard call, which costs more than the check itself.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from litestar import Request
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException, TooManyRequestsException

from serving import metrics
from serving.auth import ANONYMOUS_ADMIN, HEADER, Principal
from serving.services import Services

_MIN_REFRESH_SECONDS = 1.0


async def _principal(request: Request, services: Services) -> Principal:
    if not services.settings.auth_enabled:
        return ANONYMOUS_ADMIN
    presented = request.headers.get(HEADER)
    principal = services.keys.check(presented)
    if principal is None and presented and time.monotonic() - services.keys.loaded_at > _MIN_REFRESH_SECONDS:
        await asyncio.to_thread(services.keys.refresh)  # a key created since the last refresh
        principal = services.keys.check(presented)
    if principal is None:
        raise NotAuthorizedException(f"a valid API key is required in the {HEADER} header")
    return principal


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
    return check
