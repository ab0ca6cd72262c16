"""The account embedded PostgreSQL runs as: as root, a system account that must reach its data
directory and programs (see `batchcalls.ops.embedded`)."""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shutil
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from batchcalls.adapters.logs import quoted
from batchcalls.ops.embedded_processes import STOP_TIMEOUT, EmbeddedServerError, process_in, wait_gone

log = logging.getLogger("batchcalls.embedded")

# PostgreSQL refuses to run as root; as root we run it as this account, the one pgserver uses.
ROOT_POSTGRES_ACCOUNT = "pgserver"


def postgres_account(data_dir: Path, pgdata: Path, install: Path) -> tuple[dict[str, Any], Path]:
    """`subprocess` arguments that run PostgreSQL's programs as an account allowed to run them,
    after making `pgdata` that account's, and the directory of those programs."""
    if os.geteuid() != 0:
        pgdata.mkdir(mode=0o700, exist_ok=True)
        return {}, install / "bin"
    entry = _system_account(ROOT_POSTGRES_ACCOUNT)
    account: dict[str, Any] = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def reachable(path: Path) -> bool:
        return subprocess.run(["test", "-x", str(path)], **account).returncode == 0

    # Let the account through our own data directory (a private temporary directory, say); its
    # parents are not ours to open up.
    data_dir.chmod(data_dir.stat().st_mode | stat.S_IXOTH)
    if not reachable(data_dir):
        raise EmbeddedServerError(
            f"PostgreSQL cannot run as root, and account {entry.pw_name!r} cannot reach "
            f"{data_dir}; point BATCHCALLS_DATA_DIR at a directory other users can traverse, "
            "such as /var/lib/batchcalls"
        )
    if not reachable(install / "bin"):
        # The virtualenv is in a directory private to root (a clone in a `mktemp -d`, say).
        install = _install_copy(install, data_dir)
    pgdata.mkdir(mode=0o700, exist_ok=True)
    if pgdata.stat().st_uid != entry.pw_uid:
        for path in [pgdata, *pgdata.rglob("*")]:
            os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)
    return account, install / "bin"


def _install_copy(install: Path, data_dir: Path) -> Path:
    """PostgreSQL's programs (pgserver's `pginstall`, 34 MB, and the `pgserver.libs` beside the
    package that their RPATH names as `$ORIGIN/../../../pgserver.libs`) copied into `data_dir`,
    in the same layout, where the account that runs them can reach them; made once per install
    and reused. Returns the copy of `install`."""
    root = data_dir / "pgserver-programs"
    source = str(install.resolve())
    marker = root / ".copied-from"
    if marker.exists() and marker.read_text() == source:
        return root / install.parent.name / install.name
    log.info(
        "copying PostgreSQL's programs where their account can reach them source=%s copy=%s",
        quoted(source),
        quoted(str(root)),
    )
    partial = data_dir / "pgserver-programs.partial"
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(install, partial / install.parent.name / install.name, symlinks=True)
    libs = install.parent.parent / f"{install.parent.name}.libs"
    if libs.is_dir():
        shutil.copytree(libs, partial / libs.name, symlinks=True)
    (partial / ".copied-from").write_text(source)
    shutil.rmtree(root, ignore_errors=True)
    partial.rename(root)
    return root / install.parent.name / install.name


def _system_account(name: str) -> pwd.struct_passwd:
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(name)
    useradd = shutil.which("useradd")
    if useradd is not None:
        created = subprocess.run(
            [useradd, "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            capture_output=True,
            text=True,
        )
        if created.returncode == 0:
            log.info("created a system account to run PostgreSQL account=%s", quoted(name))
            return pwd.getpwnam(name)
        log.warning(
            "could not create a system account account=%s error=%s", quoted(name), quoted(created.stderr.strip())
        )
    log.warning("running embedded PostgreSQL as nobody account=nobody")
    return pwd.getpwnam("nobody")


def clear_leftover_postgres(pgdata: Path, run: Callable[..., None]) -> None:
    """We hold the claim, so a postmaster still serving `pgdata` is an orphan of a killed run:
    stop it. A pid file naming any other process is stale: remove it, since PostgreSQL refuses
    to start while the pid in it is alive, which happens when the pid was reused."""
    pid_file = pgdata / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    if process_in(pid, pgdata) is None:
        pid_file.unlink(missing_ok=True)
        return
    log.warning("stopping a PostgreSQL left running by an earlier run server_pid=%s data_dir=%s", pid, quoted(pgdata))
    with contextlib.suppress(EmbeddedServerError, subprocess.TimeoutExpired):  # then killed
        run("pg_ctl", "-m", "fast", "-w", "-t", str(int(STOP_TIMEOUT)), "stop")
    wait_gone(pid)
