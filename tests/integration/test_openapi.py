"""The published contract against the running API: the document and the reference page are
public, every route the app serves is in the document, and schemathesis, loading the document
from the live API under gunicorn on the real stack, finds no 5xx and no answer the document
does not describe."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.generation import GenerationMode

from tests.integration.conftest import Api, new_tenant, retire_test_batches
from tests.support.servers import TestServers
from tests.support.stack import ROOT, Stack

pytestmark = pytest.mark.integration

# Served by the app but not part of the published contract: Vonage calls these (internal),
# Prometheus scrapes /metrics, and people read the dashboard's pages in a browser.
UNDOCUMENTED = ("/webhooks/vonage/", "/metrics", "/static/", "/dashboard")


def test_the_contract_is_served_without_a_key(api: Api) -> None:
    document = api.client.get("/v1/openapi.json")
    assert document.status_code == 200, document.get_data(as_text=True)
    assert document.json is not None and document.json["openapi"] == "3.1.0"
    page = api.client.get("/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert "/v1/batches/{batch_id}/calls" in page.get_data(as_text=True)
    # The exemption is those two routes only.
    for path in ("/v1/batches", "/v1/openapi.jsonx", "/v1/batches/openapi.json"):
        refused = api.client.get(path)
        assert refused.status_code == 401, path
        assert refused.json is not None and refused.json["error"]["code"] == "unauthorized"


def test_reading_the_contract_does_not_spend_a_keys_rate_limit(api_factory: Callable[..., Api]) -> None:
    api = api_factory(BATCHCALLS_RATE_LIMIT="2 per minute")
    for _ in range(4):
        assert api.client.get("/v1/openapi.json", headers=api.headers()).status_code == 200
        assert api.client.get("/docs", headers=api.headers()).status_code == 200
    assert api.get("/v1/batches").status_code == 200
    assert api.get("/v1/batches").status_code == 200
    assert api.get("/v1/batches").status_code == 429


def test_a_method_a_route_does_not_have_is_405_naming_those_it_has(api: Api) -> None:
    for path, allowed in (
        ("/docs", {"GET", "HEAD", "OPTIONS"}),
        ("/healthz", {"GET", "HEAD", "OPTIONS"}),
        ("/v1/batches", {"GET", "HEAD", "OPTIONS", "POST"}),
    ):
        response = api.client.open(path, method="TRACE", headers=api.headers())
        assert response.status_code == 405, path
        assert response.json is not None and response.json["error"]["code"] == "method_not_allowed"
        assert set(response.headers["Allow"].split(", ")) == allowed, path


def test_every_route_the_app_serves_is_documented(api: Api) -> None:
    document = api.client.get("/v1/openapi.json").json
    assert document is not None
    served = set()
    for rule in api.app.url_map.iter_rules():
        if rule.rule.startswith(UNDOCUMENTED):
            continue
        path = rule.rule.replace("<", "{").replace(">", "}")
        served |= {(path, method.lower()) for method in rule.methods or () if method not in ("HEAD", "OPTIONS")}
    documented = {(path, method) for path, operations in document["paths"].items() for method in operations}
    assert served == documented


def test_the_budget_headers_answers_carry_are_the_documented_ones(api: Api) -> None:
    """A 200 and a 401 of the running API carry `RateLimit-Policy` and `RateLimit` as the document's
    examples show them: the tenant's budget, and the failed-auth one for a wrong key."""
    document = api.client.get("/v1/openapi.json").json
    assert document is not None
    op = document["paths"]["/v1/batches"]["get"]["responses"]
    unauthorized = document["components"]["responses"][op["401"]["$ref"].rsplit("/", 1)[-1]]
    for response, documented in (
        (api.get("/v1/batches"), op["200"]["headers"]),
        (api.client.get("/v1/batches", headers={"Authorization": "Bearer nope"}), unauthorized["headers"]),
    ):
        for name in ("RateLimit-Policy", "RateLimit"):
            sent, example = response.headers[name], documented[name]["example"]
            assert sent.split(";")[0] == example.split(";")[0], (response.status_code, name, sent, example)
            assert {item.split("=")[0] for item in sent.split(";")[1:]} == {
                item.split("=")[0] for item in example.split(";")[1:]
            }, (name, sent, example)


# --- schemathesis on the live API ------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def gunicorn_api(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The API as production serves it (gunicorn, two worker processes) on the stack's database,
    Redis and Celery workers."""
    port = _free_port()
    log_path = Path(tmp_path_factory.mktemp("gunicorn")) / "api.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "2", "api.app:create_app()"],
            cwd=ROOT,
            env={**stack.env, "PYTHONPATH": str(ROOT)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "gunicorn did not start: " + log_path.read_text()[-3000:]
            time.sleep(0.2)
        yield url
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(30)
        server_errors = [line for line in log_path.read_text().splitlines() if "Traceback" in line]
        print(f"gunicorn log {log_path}: {len(server_errors)} tracebacks")


@pytest.fixture(scope="module")
def _retire_stack_test_batches(stack: Stack, servers: TestServers) -> Iterator[None]:
    """After this module, end the batches its tenant left waiting in the stack's database (retries
    generated hours away), so that the stack's workers never dial them for a later module."""
    yield
    pg = psycopg2.connect(servers.database_url)
    pg.autocommit = True
    try:
        retire_test_batches(pg, servers.redis_url)
    finally:
        pg.close()


CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance, content_type_conformance]
EXAMPLES_PER_OPERATION = 40


def _run(strategy: Any, examples: int, call: Callable[[Any], None]) -> None:
    @given(case=strategy)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        call(case)

    run()


def test_schemathesis_finds_no_server_error_and_no_undocumented_answer(
    gunicorn_api: str, servers: TestServers, _retire_stack_test_batches: None
) -> None:
    schema = schemathesis.openapi.from_url(f"{gunicorn_api}/v1/openapi.json", timeout=30)
    session = requests.Session()
    # A tenant of its own in the stack's database (gunicorn serves that one), whose batches left
    # waiting are retired after this module.
    _, key = new_tenant(servers.database_url)
    headers = {"Authorization": f"Bearer {key}"}
    # A finished batch of this tenant, so that the batch routes answer real bodies too, not only 404s.
    basic = schema.raw_schema["paths"]["/v1/batches"]["post"]["requestBody"]["content"]["application/json"]
    submitted = session.post(
        f"{gunicorn_api}/v1/batches", json=basic["examples"]["basic"]["value"], headers=headers, timeout=30
    )
    assert submitted.status_code == 202, submitted.text
    batch_id = submitted.json()["batch_id"]
    deadline = time.monotonic() + 60
    while (
        session.get(f"{gunicorn_api}/v1/batches/{batch_id}", headers=headers, timeout=30).json()["finished_at"] is None
    ):
        assert time.monotonic() < deadline, "the example batch did not finish"
        time.sleep(0.2)
    answers: Counter[tuple[str, int]] = Counter()
    failures: list[str] = []

    def call(case: Any) -> None:
        response = case.call_and_validate(
            base_url=gunicorn_api, session=session, headers=headers, checks=CHECKS, timeout=30
        )
        answers[(case.operation.label, response.status_code)] += 1

    def attempt(label: str, run: Callable[[], None]) -> None:
        try:
            run()
        except Unsatisfiable:
            pass  # a negative run of an operation that has nothing to make invalid
        except Exception as exc:  # noqa: BLE001 - every failing operation is reported, not only the first
            failures.append(f"{label}: {exc}")

    # ok() raises on an operation schemathesis could not read: the document must be whole.
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert {op.label for op in operations} >= {"POST /v1/batches", "GET /v1/batches/{batch_id}/calls"}
    for op in operations:
        for strategy in op.get_strategies_from_examples():
            attempt(f"{op.label} (examples)", partial(_run, strategy, 5, call))
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            attempt(
                f"{op.label} ({mode.value})",
                partial(_run, op.as_strategy(generation_mode=mode), EXAMPLES_PER_OPERATION, call),
            )
            if "batch_id" in op.path:
                real = op.as_strategy(generation_mode=mode, path_parameters={"batch_id": batch_id})
                attempt(
                    f"{op.label} ({mode.value}, real batch)", partial(_run, real, EXAMPLES_PER_OPERATION // 2, call)
                )
    print(sorted(answers.items()))
    assert not failures, "\n\n".join(failures)
    for label, status in (
        ("POST /v1/batches", 202),
        ("GET /v1/batches", 200),
        ("GET /v1/batches/{batch_id}", 200),
        ("GET /v1/batches/{batch_id}/calls", 200),
        ("GET /v1/batches/{batch_id}/results", 200),  # a streamed answer, JSONL or CSV
        ("POST /v1/batches", 422),
    ):
        assert answers[(label, status)], (label, status, sorted(answers.items()))
