"""The Procfile, docker-compose.yml and Dockerfile describe the same processes.

Compose interpolates `${VAR}` in the file itself from the environment of `docker compose`, and
`$$` is its escape for a literal `$`. The tests below apply the same rules (`interpolate`) and
compare what a container's shell receives with the Procfile line, character for character.
"""

from __future__ import annotations

import configparser
import json
import re
import shlex
import shutil
import sys
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import pytest
import yaml

from batchcalls.adapters.queues import QUEUES
from config.settings import Settings
from workers.celery_app import create_celery

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent

# Procfile process -> compose service running the same command.
PROCESS_SERVICE = {
    "release": "migrate",
    "web": "api",
    "worker": "worker",
    "delivery": "delivery",
    "beat": "beat",
    "flower": "flower",
}
APP_SERVICES = tuple(PROCESS_SERVICE.values())
RUN_AFTER_MIGRATE = ("api", "worker", "delivery", "beat")

DUMMY_ENV = {
    "DATABASE_URL": "postgresql://user:pw@db.invalid:5432/batchcalls",
    "REDIS_URL": "redis://redis.invalid:6379/0",
}


# -- parsing ------------------------------------------------------------------------------------


@cache
def procfile() -> dict[str, str]:
    processes: dict[str, str] = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, command = line.partition(":")
        assert sep and re.fullmatch(r"[A-Za-z0-9_-]+", name), f"malformed Procfile line: {line!r}"
        assert name not in processes, f"Procfile defines {name!r} twice"
        processes[name] = command.strip()
    return processes


@cache
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "docker-compose.yml").read_text())  # resolves anchors and `<<` merges
    assert isinstance(loaded, dict)
    return cast(dict[str, Any], loaded)


def service(name: str) -> dict[str, Any]:
    services = compose()["services"]
    assert name in services, f"docker-compose.yml has no service {name!r}"
    found = services[name]
    assert isinstance(found, dict), f"service {name!r} is not a mapping"
    return cast(dict[str, Any], found)


@cache
def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    instructions = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, args = line.strip().partition(" ")
            instructions.append((keyword.upper(), args.strip()))
    return instructions


@cache
def setup_cfg() -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    return parser


def console_scripts() -> set[str]:
    entries = setup_cfg()["options.entry_points"]["console_scripts"]
    return {line.split("=")[0].strip() for line in entries.splitlines() if line.strip()}


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's interpolation: `$$`, `$VAR`, `${VAR}`, `${VAR:-default}` (nested), `${VAR:?error}`..."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] != "$":
            out.append(text[i])
            i += 1
        elif text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("${", i):
            end = _closing_brace(text, i + 1)
            out.append(_substitute(text[i + 2 : end], env))
            i = end + 1
        elif match := re.match(r"[A-Za-z_][A-Za-z0-9_]*", text[i + 1 :]):
            out.append(env.get(match.group(), ""))
            i += 1 + match.end()
        else:
            out.append("$")
            i += 1
    return "".join(out)


def _closing_brace(text: str, opening: int) -> int:
    depth = 0
    for j in range(opening, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    raise ValueError(f"unclosed ${{ in {text!r}")


def _substitute(expression: str, env: Mapping[str, str]) -> str:
    match = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])(.*))?", expression, re.S)
    if match is None:
        raise ValueError(f"invalid interpolation ${{{expression}}}")
    name, op, arg = match.groups()
    value = env.get(name)
    missing = value is None or (op is not None and op.startswith(":") and value == "")
    if op is None:
        return value or ""
    if op in (":-", "-"):
        return interpolate(arg, env) if missing else str(value)
    if op in (":?", "?"):
        if missing:
            raise ValueError(f"{name}: {arg}")
        return str(value)
    return "" if missing else interpolate(arg, env)  # :+ and +


def container_env(name: str, host_env: Mapping[str, str] | None = None) -> dict[str, str | None]:
    """A service's container environment as Compose resolves it (None: not set in the container)."""
    host_env = {} if host_env is None else host_env
    environment = service(name).get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) if "=" in item else (item, None) for item in environment)
    return {
        key: host_env.get(key) if value is None else interpolate(str(value), host_env)
        for key, value in environment.items()
    }


def container_command(name: str, host_env: Mapping[str, str] | None = None) -> list[str]:
    command = service(name).get("command")
    assert isinstance(command, list), f"{name}: give `command` in list form (a string is split by Compose, not a shell)"
    return [interpolate(str(part), {} if host_env is None else host_env) for part in command]


def shell_variables(command: str) -> set[str]:
    return set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", command))


def program_argv(command: str) -> list[str]:
    """The program and its arguments: the words after any leading `NAME=value` assignments (which
    set the program's environment, not its command line)."""
    words = shlex.split(command)
    while words and re.match(r"[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        words.pop(0)
    return words


def program(command: str) -> str:
    return program_argv(command)[0]


# -- Procfile <-> docker-compose.yml ---------------------------------------------------------------


def test_procfile_has_the_expected_processes() -> None:
    assert set(procfile()) == set(PROCESS_SERVICE)


@pytest.mark.parametrize(("process", "name"), PROCESS_SERVICE.items())
def test_compose_service_runs_the_procfile_command(process: str, name: str) -> None:
    line = procfile()[process]
    assert container_command(name) == ["sh", "-c", line]
    # Every `$` is escaped: the container's shell expands the variables, not Compose, so the
    # command does not change with the environment `docker compose` happens to run in.
    weird = {var: f"<{var}>" for var in shell_variables(line)}
    assert container_command(name, weird) == ["sh", "-c", line]


@pytest.mark.parametrize(("process", "name"), PROCESS_SERVICE.items())
def test_variables_of_the_command_reach_the_container(process: str, name: str) -> None:
    environment = container_env(name)
    missing = shell_variables(procfile()[process]) - set(environment)
    assert not missing, f"{name}: the command reads {sorted(missing)} but the service does not pass them"


@pytest.mark.parametrize("process", ["worker", "delivery"])
def test_worker_sends_task_events_for_flower(process: str) -> None:
    assert "--events" in shlex.split(procfile()[process])


def _option(tokens: list[str], *names: str) -> str | None:
    """The value of a command-line option given as `--name value`, `--name=value` or `-n value`."""
    for i, token in enumerate(tokens):
        for name in names:
            if token == name and i + 1 < len(tokens):
                return tokens[i + 1]
            if token.startswith(name + "="):
                return token.split("=", 1)[1]
    return None


def _consumed(process: str) -> set[str]:
    """The queues a Procfile worker line consumes (every queue the app declares, without `--queues`)."""
    queues = _option(shlex.split(procfile()[process]), "--queues", "-Q")
    return set(QUEUES) if queues is None else set(queues.split(","))


def test_deliveries_have_a_worker_of_their_own_and_call_handling_never_waits_behind_them() -> None:
    app = create_celery(Settings(database_url="", redis_url="redis://redis.invalid:6379/0"))
    route = app.amqp.router.route({}, "batchcalls.deliver", (), {})["queue"].name
    assert route == "deliveries"
    assert _consumed("delivery") == {"deliveries"}
    assert _consumed("worker") == {app.conf.task_default_queue} and "deliveries" not in _consumed("worker")
    # Every queue a task is sent to is consumed by some process.
    declared = {queue.name for queue in app.conf.task_queues}
    assert declared == _consumed("worker") | _consumed("delivery")
    # Two worker processes on one host need distinct node names.
    assert _option(shlex.split(procfile()["delivery"]), "--hostname", "-n") == "delivery@%h"
    assert _option(shlex.split(procfile()["worker"]), "--hostname", "-n") is None


SECRET_VARIABLES = {
    "FLOWER_BASIC_AUTH",
    "POSTGRES_PASSWORD",
    "DATABASE_URL",
    "REDIS_URL",
    "VONAGE_PRIVATE_KEY",
    "VONAGE_SIGNATURE_SECRET",
}


@pytest.mark.parametrize("process", PROCESS_SERVICE)
def test_no_command_line_carries_a_secret(process: str) -> None:
    """A process's arguments are readable by every local user (`ps`); secrets go in its environment."""
    argv = " ".join(program_argv(procfile()[process]))
    assert not shell_variables(argv) & SECRET_VARIABLES, argv
    assert "--basic-auth" not in argv and "password" not in argv.lower(), argv


def test_supervisor_runs_flower_without_credentials_on_its_command_line() -> None:
    from batchcalls.ops.supervisor import flower_command, flower_credentials

    argv = flower_command(5555)
    assert argv[-4:] == ["workers.tasks", "flower", "--port=5555", "--address=127.0.0.1"]
    assert not any("auth" in arg or ":" in arg.partition("=")[2] for arg in argv[-4:]), argv
    assert flower_credentials({"FLOWER_BASIC_AUTH": "ops:secret"}) == ("ops:secret", False)
    # Unset (or blank), a password is made up: Flower is never served without one.
    for environ in ({}, {"FLOWER_BASIC_AUTH": " "}):
        made, made_up = flower_credentials(environ)
        user, _, password = made.partition(":")
        assert made_up and user == "flower" and len(password) >= 20 and re.fullmatch(r"[A-Za-z0-9_-]+", password)
    assert flower_credentials({})[0] != flower_credentials({})[0]


# -- services ----------------------------------------------------------------------------------------


def test_app_services_build_from_the_one_dockerfile() -> None:
    builds = []
    for name in APP_SERVICES:
        build = service(name).get("build")
        assert build is not None, f"{name} is not built"
        if isinstance(build, str):
            build = {"context": build}
        context = ROOT / build.get("context", ".")
        assert (context / build.get("dockerfile", "Dockerfile")).resolve() == (ROOT / "Dockerfile").resolve()
        builds.append(json.dumps(build, sort_keys=True))
    assert len(set(builds)) == 1, "the app services differ in how they are built"


def test_postgres_and_redis_services() -> None:
    postgres, redis = service("postgres"), service("redis")
    assert str(postgres["image"]).startswith("postgres:16")
    assert postgres.get("healthcheck", {}).get("test")
    assert str(redis["image"]).startswith("redis:7")
    redis_command = redis.get("command")
    assert isinstance(redis_command, list)
    assert redis_command[redis_command.index("--save") :][:2] == ["--save", ""]
    assert redis_command[redis_command.index("--appendonly") :][:2] == ["--appendonly", "no"]
    assert not redis.get("volumes")


@pytest.mark.parametrize("host_env", [{}, {"POSTGRES_PASSWORD": "s3cret"}])
@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_use_the_postgres_and_redis_services(name: str, host_env: dict[str, str]) -> None:
    env = container_env(name, host_env)
    pg_env = container_env("postgres", host_env)
    database = urlsplit(env["DATABASE_URL"] or "")
    assert database.scheme in ("postgresql", "postgres")
    assert (database.hostname, database.port or 5432) == ("postgres", 5432)
    assert database.username == pg_env["POSTGRES_USER"]
    assert database.password == pg_env["POSTGRES_PASSWORD"]
    assert database.path.lstrip("/") == pg_env["POSTGRES_DB"]
    broker = urlsplit(env["REDIS_URL"] or "")
    assert broker.scheme == "redis"
    assert (broker.hostname, broker.port or 6379) == ("redis", 6379)


def test_app_services_pass_database_and_redis_urls_through_from_the_environment() -> None:
    host_env = {"DATABASE_URL": "postgresql://a:b@db.example:5432/x", "REDIS_URL": "redis://cache.example:6379/1"}
    for name in APP_SERVICES:
        env = container_env(name, host_env)
        assert (env["DATABASE_URL"], env["REDIS_URL"]) == (host_env["DATABASE_URL"], host_env["REDIS_URL"])


def test_app_services_pass_every_setting_through() -> None:
    source = (ROOT / "config" / "settings.py").read_text()
    settings = set(re.findall(r"\"((?:BATCHCALLS|VONAGE)_[A-Z0-9_]+|PUBLIC_BASE_URL)\"", source))
    assert "BATCHCALLS_MAX_CONCURRENCY" in settings
    for name in APP_SERVICES:
        missing = settings - set(container_env(name))
        assert not missing, f"{name} does not pass {sorted(missing)}"
        host_env = {setting: "from-host" for setting in settings}
        assert all(container_env(name, host_env)[setting] == "from-host" for setting in settings)


@pytest.mark.parametrize("name", ["worker", "delivery"])
def test_worker_is_scalable(name: str) -> None:
    worker = service(name)
    for key in ("container_name", "ports", "hostname"):
        assert key not in worker, f"{name} sets {key}, so `--scale {name}=N` cannot start more than one"


def test_migrate_runs_once_before_api_worker_and_beat() -> None:
    migrate = service("migrate")
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert str(migrate.get("restart", "no")) == "no", "a one-shot service must not be restarted"
    for name in RUN_AFTER_MIGRATE:
        depends_on = service(name).get("depends_on")
        assert isinstance(depends_on, dict), f"{name}: depends_on needs the long form with a condition"
        assert depends_on.get("migrate", {}).get("condition") == "service_completed_successfully", name


def test_published_ports() -> None:
    assert container_env("api")["PORT"] == "8000"
    assert "8000:8000" in [interpolate(str(port), {}) for port in service("api")["ports"]]
    assert "5555:5555" in [interpolate(str(port), {}) for port in service("flower")["ports"]]
    assert "9000:9000" in [interpolate(str(port), {"PORT": "9000"}) for port in service("api")["ports"]]
    assert container_env("api", {"PORT": "9000"})["PORT"] == "9000"


# -- Dockerfile -----------------------------------------------------------------------------------


def test_dockerfile_installs_the_package_as_a_non_root_user() -> None:
    instructions = dockerfile()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    runs = " ".join(args for keyword, args in instructions if keyword == "RUN")
    assert re.search(r"\bpip install \.(\s|$)", runs)
    users = [args for keyword, args in instructions if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert ("EXPOSE", "8000") in instructions
    copied = " ".join(args for keyword, args in instructions if keyword == "COPY")
    packages = [
        line.strip()
        for line in setup_cfg()["options.packages.find"]["include"].splitlines()
        if line.strip() and "." not in line
    ]
    metadata_files = re.findall(r"file:\s*(\S+)", setup_cfg()["metadata"].get("long_description", ""))
    for needed in ("pyproject.toml", "setup.cfg", "setup.py", *metadata_files, *packages):
        assert re.search(rf"(^|\s){re.escape(needed)}(\s|$)", copied), f"the Dockerfile does not copy {needed}"


def test_dockerfile_command_is_the_procfile_web_line() -> None:
    commands = [json.loads(args) for keyword, args in dockerfile() if keyword in ("CMD", "ENTRYPOINT")]
    assert commands, "the Dockerfile has no CMD"
    cmd = [json.loads(args) for keyword, args in dockerfile() if keyword == "CMD"][-1]
    assert cmd == ["sh", "-c", procfile()["web"]]
    for command in commands:
        executable = program(command[2]) if command[:2] == ["sh", "-c"] else command[0]
        assert executable in {"gunicorn", "celery"} | console_scripts()


# -- the programs exist and the apps import -------------------------------------------------------


@pytest.mark.parametrize("process", PROCESS_SERVICE)
def test_procfile_program_is_installed(process: str) -> None:
    executable = program(procfile()[process])
    assert executable in {"gunicorn", "celery"} | console_scripts()
    assert shutil.which(executable, path=str(VENV_BIN)), f"{executable} is not installed in {VENV_BIN}"
