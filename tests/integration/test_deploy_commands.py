"""The Procfile's commands run: the Flower line refuses to start without its credentials and keeps
them off its command line, the entry modules import without connecting, and every option a
Procfile line uses is one its program knows. These start subprocesses, so they are integration
tests; the files themselves are checked in tests/unit/test_deploy_files.py."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys

import pytest

from tests.unit.test_deploy_files import DUMMY_ENV, ROOT, VENV_BIN, procfile, program

pytestmark = pytest.mark.integration


FAKE_PROGRAM = (
    "import json, os, sys; print(json.dumps({'argv': sys.argv[1:], 'auth': os.environ.get('FLOWER_BASIC_AUTH')}))"
)


def test_flower_requires_basic_auth_from_the_environment_and_keeps_it_off_its_command_line() -> None:
    line = procfile()["flower"]
    assert program(line) == "celery"
    fake = line.replace(" celery ", f" {shlex.quote(sys.executable)} -c {shlex.quote(FAKE_PROGRAM)} ", 1)
    # Unset, the shell refuses to start Flower instead of serving it without a password.
    result = subprocess.run(
        ["sh", "-c", fake], capture_output=True, text=True, env={"PATH": os.environ.get("PATH", "")}, timeout=10
    )
    assert result.returncode != 0 and "FLOWER_BASIC_AUTH" in result.stderr
    result = subprocess.run(
        ["sh", "-c", fake],
        capture_output=True,
        text=True,
        env={"PATH": os.environ.get("PATH", ""), "FLOWER_BASIC_AUTH": "ops:pa ss"},
        timeout=10,
    )
    assert result.returncode == 0, result.stderr
    ran = json.loads(result.stdout)
    assert ran["auth"] == "ops:pa ss"  # Flower gets it in its environment...
    assert not any("pa ss" in arg or "basic" in arg.lower() for arg in ran["argv"]), ran["argv"]  # ...not in argv


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **DUMMY_ENV, "PATH": str(VENV_BIN) + os.pathsep + os.environ.get("PATH", "")}
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("statement", ["import workers.tasks", "from api.app import create_app"])
def test_entry_modules_import_without_connecting(statement: str) -> None:
    result = _run([sys.executable, "-c", statement])
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("process", ["release", "web", "worker", "delivery", "beat"])
def test_procfile_options_are_known_to_the_program(process: str) -> None:
    """`<program> <subcommand> --help` loads the app (`-A workers.tasks`) and lists every option used."""
    tokens = shlex.split(procfile()[process])
    first_option = next((i for i, token in enumerate(tokens) if token.startswith("--")), len(tokens))
    result = _run([str(VENV_BIN / tokens[0]), *tokens[1:first_option], "--help"])
    assert result.returncode == 0, result.stderr
    for option in {token.split("=")[0] for token in tokens if token.startswith("--")}:
        assert re.search(rf"(^|[\s,]){re.escape(option)}\b", result.stdout), f"{process}: {option} is not an option"


def test_flower_options_are_known_to_flower() -> None:
    options = sorted({token.split("=")[0][2:] for token in shlex.split(procfile()["flower"]) if token.startswith("--")})
    assert "basic-auth" not in options
    check = "import sys, flower.options, tornado.options as t; sys.exit(' '.join(o for o in sys.argv[1:] if o not in t.options) or None)"
    result = _run([sys.executable, "-c", check, *options])
    assert result.returncode == 0, result.stderr
    # Flower takes its credentials from FLOWER_BASIC_AUTH in its environment (FLOWER_ + option name).
    reads = "import flower.command as c, flower.options as o; c.apply_env_options(); print(o.options.basic_auth)"
    result = subprocess.run(
        [sys.executable, "-c", reads],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "FLOWER_BASIC_AUTH": "ops:secret"},
    )
    assert result.returncode == 0 and result.stdout.strip() == "['ops:secret']", result.stdout + result.stderr
    assert _run([str(VENV_BIN / "celery"), "-A", "workers.tasks", "flower", "--help"]).returncode == 0
