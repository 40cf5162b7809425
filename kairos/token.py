"""Secrets from settings, or generated once into the state directory (mode 0600) for the
embedded default, where every process reads them: the admin token (the server and the
``kairos admin`` CLI), the unsubscribe key (the sender and ingest)."""

from __future__ import annotations

import os
import secrets

from kairos.settings import KairosSettings


def admin_token(settings: KairosSettings, create: bool = True) -> str | None:
    """``KAIROS_ADMIN_TOKEN``, else ``<state_dir>/admin-token`` (created when ``create``)."""
    if settings.admin_token is not None:
        return settings.admin_token.get_secret_value()
    return state_secret(settings, "admin-token", "adm_", create)


def state_secret(
    settings: KairosSettings, name: str, prefix: str, create: bool = True
) -> str | None:
    """The secret in ``<state_dir>/<name>``, created (mode 0600, ``prefix`` + 32 random bytes)
    when missing and ``create``; a concurrent creator's secret wins."""
    path = settings.state_dir / name
    if path.exists():
        return path.read_text().strip()
    if not create:
        return None
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    token = prefix + secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token
