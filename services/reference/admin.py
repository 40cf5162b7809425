"""The admin HTTP API (mounted by ingest under ``/admin``), behind ``KAIROS_ADMIN_TOKEN``."""

from __future__ import annotations

import hmac
from typing import Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from kairos.clock import Clock, to_datetime
from schemas.reference import AccountState, SuppressionReason
from services.reference import commands as cmd
from services.reference.commands import RefError
from services.reference.view import ReferenceView
from services.reference.writer import ReferenceWriter


class AccountIn(BaseModel):
    name: str
    plan: str | None = None
    domain: str | None = None
    verified: bool = False
    time_zone: str | None = None
    list_unsubscribe: bool | None = None


class SettingsIn(BaseModel):
    """Account settings to change; a key left out keeps its value."""

    time_zone: str | None = Field(
        default=None, description="Default IANA zone of local-time sends (null: UTC)."
    )
    list_unsubscribe: bool | None = Field(
        default=None, description="RFC 8058 one-click unsubscribe headers by default."
    )


class PlanIn(BaseModel):
    plan: str


class DomainIn(BaseModel):
    domain: str
    verified: bool = False


class SuppressionIn(BaseModel):
    address: str
    reason: SuppressionReason = "manual"


def _error(exc: RefError) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": exc.code, "message": exc.message, "field": exc.field}},
        status_code=exc.status,
    )


def _account_json(a: AccountState, view: ReferenceView) -> dict[str, Any]:
    return {
        "account_id": a.account_id,
        "name": a.name,
        "status": a.status,
        "plan": a.plan.model_dump(),
        "created_at": a.created_at.isoformat(),
        "time_zone": a.time_zone or "UTC",
        "list_unsubscribe": bool(a.list_unsubscribe),
        "domains": [
            {"domain": d.domain, "verified": d.verified, "changed_at": d.changed_at.isoformat()}
            for d in view.domains.values()
            if d.account_id == a.account_id
        ],
        "keys": [{"key_id": k.key_id, "status": k.status} for k in view.keys_of(a.account_id)],
    }


def admin_router(
    view: ReferenceView, writer: ReferenceWriter, token: str, clock: Clock
) -> APIRouter:
    """The ``/admin`` routes. Every route needs ``Authorization: Bearer <admin token>``."""

    async def require_admin(authorization: str | None = Header(default=None)) -> None:
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not given or not hmac.compare_digest(given.encode(), token.encode()):
            raise RefError(401, "UNAUTHORIZED", "a valid admin token is required")

    router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])

    def now() -> Any:
        return to_datetime(clock.now())

    @router.post("/accounts", status_code=201)
    async def create_account(body: AccountIn) -> JSONResponse:
        records, account_id, api_key = cmd.create_account(
            view,
            body.name,
            body.plan,
            body.domain,
            body.verified,
            now(),
            body.time_zone,
            body.list_unsubscribe,
        )
        await writer.apply(records)
        account = view.account(account_id)
        assert account is not None
        return JSONResponse({**_account_json(account, view), "api_key": api_key}, status_code=201)

    @router.get("/accounts")
    async def list_accounts() -> JSONResponse:
        return JSONResponse({"accounts": [_account_json(a, view) for a in view.accounts.values()]})

    @router.get("/accounts/{account_id}")
    async def get_account(account_id: str) -> JSONResponse:
        account = view.account(account_id)
        if account is None:
            raise RefError(404, "ACCOUNT_NOT_FOUND", f"no account {account_id}", "account_id")
        return JSONResponse(_account_json(account, view))

    @router.post("/accounts/{account_id}/disable")
    async def disable_account(account_id: str) -> JSONResponse:
        await writer.apply([cmd.set_status(view, account_id, "disabled", now())])
        return await get_account(account_id)

    @router.post("/accounts/{account_id}/enable")
    async def enable_account(account_id: str) -> JSONResponse:
        await writer.apply([cmd.set_status(view, account_id, "active", now())])
        return await get_account(account_id)

    @router.patch("/accounts/{account_id}")
    async def account_settings(account_id: str, body: SettingsIn) -> JSONResponse:
        """Change the account's default time zone or one-click unsubscribe default."""
        changes = body.model_dump(exclude_unset=True)
        await writer.apply([cmd.set_settings(view, account_id, changes, now())])
        return await get_account(account_id)

    @router.put("/accounts/{account_id}/plan")
    async def account_plan(account_id: str, body: PlanIn) -> JSONResponse:
        await writer.apply([cmd.set_plan(view, account_id, body.plan, now())])
        return await get_account(account_id)

    @router.post("/accounts/{account_id}/keys", status_code=201)
    async def create_key(account_id: str) -> JSONResponse:
        record, api_key = cmd.create_key(view, account_id, now())
        await writer.apply([record])
        return JSONResponse(
            {"account_id": account_id, "key_id": api_key[:12], "api_key": api_key}, status_code=201
        )

    @router.delete("/keys/{key_id}")
    async def revoke_key(key_id: str) -> JSONResponse:
        record = cmd.revoke_key(view, key_id, now())
        await writer.apply([record])
        return JSONResponse({"key_id": key_id, "status": "revoked"})

    @router.post("/accounts/{account_id}/domains", status_code=201)
    async def add_domain(account_id: str, body: DomainIn) -> JSONResponse:
        record = cmd.add_domain(view, account_id, body.domain, body.verified, now())
        await writer.apply([record])
        return JSONResponse(
            record.value.model_dump(mode="json") if record.value else {}, status_code=201
        )

    @router.post("/accounts/{account_id}/domains/{domain}/{action}")
    async def verify_domain(
        account_id: str, domain: str, action: Literal["verify", "unverify"]
    ) -> JSONResponse:
        record = cmd.set_verified(view, account_id, domain, action == "verify", now())
        await writer.apply([record])
        return JSONResponse(record.value.model_dump(mode="json") if record.value else {})

    @router.get("/accounts/{account_id}/suppressions")
    async def list_suppressions(account_id: str) -> JSONResponse:
        if view.account(account_id) is None:
            raise RefError(404, "ACCOUNT_NOT_FOUND", f"no account {account_id}", "account_id")
        return JSONResponse(
            {
                "suppressions": [
                    {"address": s.address, "reason": s.reason, "added_at": s.added_at.isoformat()}
                    for s in view.suppressions.values()
                    if s.account_id == account_id
                ]
            }
        )

    @router.post("/accounts/{account_id}/suppressions", status_code=201)
    async def add_suppression(account_id: str, body: SuppressionIn) -> JSONResponse:
        record = cmd.add_suppression(view, account_id, body.address, body.reason, now())
        await writer.apply([record])
        return JSONResponse(
            record.value.model_dump(mode="json") if record.value else {}, status_code=201
        )

    @router.delete("/accounts/{account_id}/suppressions/{address}")
    async def remove_suppression(account_id: str, address: str) -> JSONResponse:
        await writer.apply([cmd.remove_suppression(view, account_id, address)])
        return JSONResponse({"address": address.lower(), "removed": True})

    return router


def install_error_handler(app: FastAPI) -> None:
    """Answer a RefError raised by a route or a dependency as the API's JSON error."""

    async def _ref_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RefError)
        return _error(exc)

    app.add_exception_handler(RefError, _ref_error)
