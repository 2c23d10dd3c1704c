"""``POST /admin/reload`` and ``POST /admin/rollback``: for ``admin`` keys, every call audited."""

from __future__ import annotations

import asyncio

import requests
from litestar import Controller, Request, post
from litestar.exceptions import ClientException, ServiceUnavailableException
from mlflow.exceptions import MlflowException

from price_platform.registry.announce import promotion_channel
from price_platform.registry.promotion import PromotionRefused, rollback
from serving.auth import audit
from serving.dependencies import PlatformDsn, Schemas, ServingSettings, Shared, Store
from serving.guards import requires
from serving.model_store import ModelRefused
from serving.openapi import ERRORS, json_body
from serving.schemas import AdminResult, decode_admin_request


async def _audit(dsn: str | None, actor: str, action: str, detail: dict) -> None:
    if dsn is None:
        return
    try:
        await asyncio.to_thread(audit, dsn, actor, action, detail)
    except Exception as error:  # noqa: BLE001 (no audit, no admin action)
        raise ServiceUnavailableException(f"the audit log cannot be written: {error}") from error


class AdminController(Controller):
    tags = ["admin"]
    path = "/admin"
    before_request = requires("admin")

    @post("/reload", status_code=200, operation_class=json_body("AdminRequest", "Why (optional).", required=False),
          summary="Load the version the champion alias points to now",
          opt={ERRORS: {503: "The audit log cannot be written, the model registry does not answer (the loaded model keeps"
                                " serving), or no champion could be loaded."}})
    async def reload(self, request: Request, store: Store, schemas: Schemas, dsn: PlatformDsn) -> AdminResult:
        body = decode_admin_request(schemas.admin_decoder, await request.body())
        actor = f"api-key:{request.state.principal.key_id}"
        before = store.current.version if store.current else None
        await _audit(dsn, actor, "reload", {"reason": body.reason, "serving": before})
        await store.refresh(f"admin reload by {actor}")
        if store.registry_error:
            raise ServiceUnavailableException(f"{store.registry_error}; still serving {before}")
        after = store.current
        if after is None:
            raise ServiceUnavailableException("no champion could be loaded")
        return AdminResult(action="reload", from_version=before, to_version=after.version, actor=actor)

    @post("/rollback", status_code=200, operation_class=json_body("AdminRequest", "Why (optional).", required=False),
          summary="Give the champion alias back to the version the current champion replaced",
          opt={ERRORS: {
              409: "Nothing to roll back to (no earlier champion), or the registry refused the rollback.",
              503: "No platform database, the audit log cannot be written, the model registry does not answer,"
                   " or the earlier version cannot be loaded.",
          }})
    async def rollback(
        self, request: Request, store: Store, schemas: Schemas, shared: Shared, settings: ServingSettings, dsn: PlatformDsn
    ) -> AdminResult:
        body = decode_admin_request(schemas.admin_decoder, await request.body())
        actor = f"api-key:{request.state.principal.key_id}"
        if dsn is None:
            raise ServiceUnavailableException("rollback needs the platform database")
        await _audit(dsn, actor, "rollback", {"reason": body.reason})
        try:
            deployment = await asyncio.to_thread(
                rollback, settings.tracking_uri, settings.model_name, dsn=dsn, actor=actor,
                reason=body.reason or "rollback through the API",
            )
        except PromotionRefused as error:
            raise ClientException(str(error), status_code=409) from None
        except (MlflowException, requests.exceptions.RequestException) as error:
            raise ServiceUnavailableException(
                f"the model registry did not answer ({type(error).__name__}): nothing was rolled back"
            ) from None
        try:
            await store.load(deployment.to_version, f"rollback by {actor}")
        except ModelRefused as error:
            raise ServiceUnavailableException(str(error)) from None
        await shared.publish(promotion_channel(settings.model_name), deployment.to_version)
        return AdminResult(action="rollback", from_version=deployment.from_version, to_version=deployment.to_version,
                           actor=actor)
