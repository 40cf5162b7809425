"""``kairos admin``: the admin API from the command line (``KAIROS_ADMIN_URL``, the admin
token from ``KAIROS_ADMIN_TOKEN`` or the embedded default's ``<state_dir>/admin-token``)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
import httpx

from kairos.settings import KairosSettings
from kairos.token import admin_token


class Admin:
    """A thin client of the admin API."""

    def __init__(self, settings: KairosSettings) -> None:
        token = admin_token(settings, create=False)
        if token is None:
            raise click.ClickException(
                "no admin token: set KAIROS_ADMIN_TOKEN, or start Kairos (make run) once so "
                f"it creates {settings.state_dir / 'admin-token'}"
            )
        self.client = httpx.Client(
            base_url=settings.admin_url.rstrip("/") + "/admin",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            r = self.client.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise click.ClickException(f"cannot reach the admin API: {exc}") from exc
        data = r.json() if r.content else {}
        if r.status_code >= 400:
            err = data.get("error", {})
            raise click.ClickException(f"{r.status_code} {err.get('code')}: {err.get('message')}")
        return data


def _admin() -> Admin:
    return Admin(KairosSettings())


def _print(data: Any, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    if isinstance(data, dict):
        for key, value in data.items():
            click.echo(
                f"{key}: {value if not isinstance(value, (dict, list)) else json.dumps(value)}"
            )


@click.group()
def admin() -> None:
    """Accounts, API keys, domains and suppressions (the admin API)."""


@admin.group()
def account() -> None:
    """Accounts."""


@account.command("create")
@click.argument("name")
@click.option("--plan", default=None, help="free, starter (default), pro, immediate")
@click.option("--domain", default=None, help="A sending domain to add")
@click.option("--verified", is_flag=True, help="Mark the domain verified")
@click.option("--json", "as_json", is_flag=True, help="Print JSON")
def account_create(
    name: str, plan: str | None, domain: str | None, verified: bool, as_json: bool
) -> None:
    """Create an account; prints its id and its first API key (shown only now)."""
    data = _admin().call(
        "POST", "/accounts", {"name": name, "plan": plan, "domain": domain, "verified": verified}
    )
    _print(data, as_json)


@account.command("show")
@click.argument("account_id")
@click.option("--json", "as_json", is_flag=True)
def account_show(account_id: str, as_json: bool) -> None:
    """Show an account."""
    _print(_admin().call("GET", f"/accounts/{account_id}"), as_json)


@account.command("disable")
@click.argument("account_id")
def account_disable(account_id: str) -> None:
    """Disable an account: it can no longer submit, and its scheduled mail fails at send time."""
    _print(_admin().call("POST", f"/accounts/{account_id}/disable"), False)


@account.command("enable")
@click.argument("account_id")
def account_enable(account_id: str) -> None:
    """Enable a disabled account."""
    _print(_admin().call("POST", f"/accounts/{account_id}/enable"), False)


@account.command("set-plan")
@click.argument("account_id")
@click.argument("plan")
def account_set_plan(account_id: str, plan: str) -> None:
    """Move an account to another plan."""
    _print(_admin().call("PUT", f"/accounts/{account_id}/plan", {"plan": plan}), False)


@admin.group()
def key() -> None:
    """API keys."""


@key.command("create")
@click.argument("account_id")
@click.option("--json", "as_json", is_flag=True)
def key_create(account_id: str, as_json: bool) -> None:
    """Create another API key for an account (shown only now)."""
    _print(_admin().call("POST", f"/accounts/{account_id}/keys"), as_json)


@key.command("revoke")
@click.argument("key_id")
def key_revoke(key_id: str) -> None:
    """Revoke an API key (by its key id, or the key itself). It stops working at once."""
    _print(_admin().call("DELETE", f"/keys/{key_id}"), False)


@admin.group()
def domain() -> None:
    """Sending domains."""


@domain.command("add")
@click.argument("account_id")
@click.argument("name")
@click.option("--verified", is_flag=True)
def domain_add(account_id: str, name: str, verified: bool) -> None:
    """Add a sending domain to an account."""
    _print(
        _admin().call(
            "POST", f"/accounts/{account_id}/domains", {"domain": name, "verified": verified}
        ),
        False,
    )


@domain.command("verify")
@click.argument("account_id")
@click.argument("name")
def domain_verify(account_id: str, name: str) -> None:
    """Mark a domain verified."""
    _print(_admin().call("POST", f"/accounts/{account_id}/domains/{name}/verify"), False)


@domain.command("unverify")
@click.argument("account_id")
@click.argument("name")
def domain_unverify(account_id: str, name: str) -> None:
    """Mark a domain unverified: its scheduled mail fails at send time."""
    _print(_admin().call("POST", f"/accounts/{account_id}/domains/{name}/unverify"), False)


@admin.group()
def suppression() -> None:
    """Suppressed recipients."""


@suppression.command("add")
@click.argument("account_id")
@click.argument("address")
@click.option(
    "--reason",
    type=click.Choice(["hard_bounce", "complaint", "unsubscribe", "manual"]),
    default="manual",
)
def suppression_add(account_id: str, address: str, reason: str) -> None:
    """Suppress an address for an account."""
    _print(
        _admin().call(
            "POST", f"/accounts/{account_id}/suppressions", {"address": address, "reason": reason}
        ),
        False,
    )


@suppression.command("remove")
@click.argument("account_id")
@click.argument("address")
def suppression_remove(account_id: str, address: str) -> None:
    """Lift a suppression."""
    _print(_admin().call("DELETE", f"/accounts/{account_id}/suppressions/{address}"), False)


@suppression.command("list")
@click.argument("account_id")
@click.option("--json", "as_json", is_flag=True)
def suppression_list(account_id: str, as_json: bool) -> None:
    """List an account's suppressions."""
    data = _admin().call("GET", f"/accounts/{account_id}/suppressions")
    if as_json:
        _print(data, True)
        return
    for s in data["suppressions"]:
        click.echo(f"{s['address']}\t{s['reason']}\t{s['added_at']}")
    if not data["suppressions"]:
        click.echo("no suppressions", err=True)
    sys.stdout.flush()
