"""The `dev` tenant's API key that `batchcalls up` keeps under the data directory."""

from __future__ import annotations

import os
from pathlib import Path

from batchcalls.adapters.store.db import Database
from batchcalls.adapters.store.keys import revoke_exact_key
from batchcalls.adapters.store.tenants import Tenant, create_key, tenant_for_key

DEV_TENANT = "dev"
DEV_KEY_FILE = "dev-api-key"  # under the data directory, readable by its owner only


def _read_key_file(path: Path) -> tuple[str, bool]:
    """The key kept in `path` ("" when there is none) and whether only its owner can read it."""
    try:
        private = path.stat().st_mode & 0o077 == 0
        return path.read_text().strip(), private
    except FileNotFoundError:
        return "", True


def _write_key_file(path: Path, key: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".new")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # whatever the umask, or a partial file left by an earlier run
    with os.fdopen(fd, "w") as out:
        out.write(key + "\n")
    os.replace(partial, path)


def dev_key(db: Database, data_dir: Path) -> tuple[Tenant, str]:
    """The dev tenant's API key kept under `data_dir`, while it still authenticates; else a new
    one, kept there for the next start. A key file others could read is not trusted: its key
    is revoked and replaced: only when it is exactly a key of the dev tenant (the file's text
    could name any key by id or prefix)."""
    path = data_dir / DEV_KEY_FILE
    kept, private = _read_key_file(path)
    if kept and private:
        tenant = tenant_for_key(db, kept)
        if tenant is not None and tenant.name == DEV_TENANT:
            return tenant, kept
    elif kept:
        revoke_exact_key(db, kept, tenant=DEV_TENANT)
    tenant, api_key = create_key(db, DEV_TENANT)
    _write_key_file(path, api_key)
    return tenant, api_key
