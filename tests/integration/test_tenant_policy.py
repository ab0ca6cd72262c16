"""Per-tenant quotas (issue 12, finding 8) and destination policy (finding 11) through the real
API on real PostgreSQL and Redis: a tenant's calls not yet final are capped (429
quota_exceeded) without stopping other tenants, a batch's size is capped (422 naming `calls`),
costly destinations are refused (422 destination_not_allowed), and a tenant's own values
(`batchcalls keys policy`, here through its store function) replace the defaults."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg2
import psycopg2.extensions
import pytest
import redis
import requests

from api.app import create_app
from batchcalls.adapters.store.db import Database
from batchcalls.adapters.store.migrate import upgrade
from batchcalls.adapters.store.tenants import create_key, set_tenant_policy, tenant_for_key
from config.settings import load_settings
from tests.fakes.vonage import make_application
from tests.integration.conftest import Api, new_tenant
from tests.integration.test_api import accepted, assert_error, assert_refused, batch, call, serving
from tests.support.servers import TestServers, more_test_servers
from tests.support.stack import Stack

pytestmark = pytest.mark.integration

ApiFactory = Callable[..., Api]


@pytest.fixture(scope="module")
def own_servers(servers: TestServers) -> Iterator[TestServers]:
    """A database and Redis database of this module's own. The session's worker processes (the
    `stack`) dial every batch their reconciler finds in their database, and a batch these tests
    count as waiting must stay waiting."""
    with more_test_servers(servers) as fresh:
        upgrade(fresh.database_url)
        yield fresh


@pytest.fixture(scope="module")
def pg(own_servers: TestServers) -> Iterator[psycopg2.extensions.connection]:
    conn = psycopg2.connect(own_servers.database_url)
    conn.autocommit = True
    try:
        yield conn
    finally:
        conn.close()


@pytest.fixture
def api_factory(own_servers: TestServers, pg: psycopg2.extensions.connection) -> ApiFactory:
    """conftest's `api_factory` on this module's own servers."""

    def make(**env: str) -> Api:
        settings = load_settings(
            {
                "BATCHCALLS_RATE_LIMIT": "100000 per minute",
                **env,
                "DATABASE_URL": own_servers.database_url,
                "REDIS_URL": own_servers.redis_url,
            }
        )
        app = create_app(settings)
        tenant, key = new_tenant(own_servers.database_url)
        return Api(app, app.test_client(), tenant, key, pg, redis.Redis.from_url(settings.redis_url))

    return make


US_PREMIUM, SATELLITE, US = "+19002345678", "+881612345678", "+14155552671"


def set_policy(api: Api, **changes: Any) -> None:
    assert set_tenant_policy(Database(api.pg.dsn), api.tenant.name, changes) is not None


def finish(pg: psycopg2.extensions.connection, batch_id: str) -> None:
    """Make every call of the batch final, as the engine's counters would."""
    with pg.cursor() as cur:
        cur.execute("UPDATE calls SET status = 'completed', outcome = 'completed' WHERE batch_id = %s", (batch_id,))
        cur.execute(
            "UPDATE batches SET status = 'completed', completed_calls = total_calls, finished_at = now() WHERE id = %s",
            (batch_id,),
        )


# -- 429 quota_exceeded -----------------------------------------------------------------------


def test_a_tenant_over_its_quota_is_429_quota_exceeded_and_other_tenants_go_on(api_factory: ApiFactory) -> None:
    api = api_factory(BATCHCALLS_TENANT_MAX_QUEUED_CALLS="5")
    first = accepted(api, batch(3), headers={"Idempotency-Key": "first"})
    response = assert_refused(api, 429, "quota_exceeded", body=batch(3))
    assert int(response.headers["Retry-After"]) >= 1
    assert response.get_json()["error"]["details"] == {
        "quota": "max_queued_calls",
        "limit": 5,
        "queued_calls": 3,
        "requested_calls": 3,
    }
    assert api.stored() == (1, 3)
    accepted(api, batch(2))  # exactly up to the quota
    assert_refused(api, 429, "quota_exceeded", body=batch(1))
    # A replay of an accepted batch adds no calls: answered even at the quota.
    replay = api.post(batch(3), headers={"Idempotency-Key": "first"})
    assert replay.status_code == 202 and replay.get_json()["batch_id"] == first["batch_id"]

    # Another tenant of the same API is not held back by the first one's calls, over real HTTP.
    other, other_key = new_tenant(api.pg.dsn)
    with serving(api.app) as base_url:
        answer = requests.post(
            f"{base_url}/v1/batches", json=batch(5), timeout=30, headers={"Authorization": f"Bearer {other_key}"}
        )
        assert answer.status_code == 202, answer.text
        answer = requests.post(
            f"{base_url}/v1/batches", json=batch(1), timeout=30, headers={"Authorization": f"Bearer {other_key}"}
        )
        assert_error(answer, 429, "quota_exceeded")

    # Calls that became final free the quota.
    finish(api.pg, first["batch_id"])
    accepted(api, batch(3))


def test_a_tenants_own_quota_replaces_the_default(api_factory: ApiFactory) -> None:
    api = api_factory(BATCHCALLS_TENANT_MAX_QUEUED_CALLS="2")
    assert_refused(api, 422, "invalid_request", {"calls"}, body=batch(3))  # larger than the whole quota
    set_policy(api, max_queued_calls=4)
    accepted(api, batch(3))
    assert_refused(api, 429, "quota_exceeded", body=batch(2))
    set_policy(api, max_queued_calls=None)  # back to the default of 2, already passed
    assert_refused(api, 429, "quota_exceeded", body=batch(1))


def test_concurrent_posts_of_one_tenant_never_pass_a_quota_only_some_fit(api_factory: ApiFactory) -> None:
    """Eight POSTs of 3 calls at once against a quota of 9: exactly three are accepted, the
    others refused, and the tenant never holds more than 9 calls."""
    api = api_factory(BATCHCALLS_TENANT_MAX_QUEUED_CALLS="9")
    barrier = threading.Barrier(8)
    answers: list[requests.Response] = []
    lock = threading.Lock()

    with serving(api.app) as base_url:

        def post() -> None:
            barrier.wait(timeout=30)
            answer = requests.post(f"{base_url}/v1/batches", json=batch(3), timeout=60, headers=api.headers())
            with lock:
                answers.append(answer)

        threads = [threading.Thread(target=post) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(90)
    assert sorted(answer.status_code for answer in answers) == [202] * 3 + [429] * 5, [a.text for a in answers]
    for answer in answers:
        if answer.status_code == 429:
            assert_error(answer, 429, "quota_exceeded")
    assert api.stored() == (3, 9)


def test_the_system_wide_limit_still_answers_503(api_factory: ApiFactory, pg: psycopg2.extensions.connection) -> None:
    with pg.cursor() as cur:
        cur.execute(
            "SELECT coalesce(sum(total_calls - completed_calls - failed_calls - cancelled_calls), 0)"
            " FROM batches WHERE status IN ('queued', 'running', 'paused')"
        )
        waiting = int(cur.fetchone()[0])
    # Far under the tenant quota, over the system's: 503 over_capacity, as before.
    api = api_factory(BATCHCALLS_MAX_QUEUED_CALLS=str(waiting), BATCHCALLS_TENANT_MAX_QUEUED_CALLS="1000")
    assert_refused(api, 503, "over_capacity", body=batch(1))


def test_on_the_running_system_a_full_tenant_stops_no_other_and_gets_room_back_as_its_calls_end(stack: Stack) -> None:
    """The whole system (API over HTTP, Celery workers, beat): tenant A, with a quota of its own
    of 6, fills it; its next batch is refused while tenant B's runs to the end; once the workers
    have ended A's calls, A may submit again."""
    db = stack.db
    a, a_key = create_key(db, "quota-a-" + os.urandom(4).hex())
    _, b_key = create_key(db, "quota-b-" + os.urandom(4).hex())
    assert set_tenant_policy(db, a.name, {"max_queued_calls": 6}) is not None

    def post(key: str, calls: int, concurrency: int = 2) -> requests.Response:
        # Numbers ending in 0: the simulator answers and completes them.
        body = {"calls": [call(i * 10) for i in range(calls)], "concurrency": concurrency}
        return requests.post(
            f"{stack.api_url}/v1/batches", json=body, timeout=60, headers={"Authorization": f"Bearer {key}"}
        )

    def finished(key: str, batch_id: str, timeout: float = 90) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            answer = requests.get(
                f"{stack.api_url}/v1/batches/{batch_id}", timeout=30, headers={"Authorization": f"Bearer {key}"}
            )
            assert answer.status_code == 200, answer.text
            if answer.json()["finished_at"] is not None:
                return dict(answer.json())
            time.sleep(0.2)
        raise AssertionError(f"{batch_id} did not finish in {timeout} s")

    first = post(a_key, 6, concurrency=1)  # one call at a time: A stays full for a few seconds
    assert first.status_code == 202, first.text
    assert_error(post(a_key, 1), 429, "quota_exceeded")
    other = post(b_key, 6)
    assert other.status_code == 202, other.text
    assert finished(b_key, other.json()["batch_id"])["completed_calls"] == 6
    assert finished(a_key, first.json()["batch_id"])["completed_calls"] == 6
    again = post(a_key, 6)
    assert again.status_code == 202, again.text
    assert finished(a_key, again.json()["batch_id"])["completed_calls"] == 6


# -- 422: calls per batch ---------------------------------------------------------------------


def test_a_batch_with_more_calls_than_allowed_is_422_naming_calls(api_factory: ApiFactory) -> None:
    api = api_factory(BATCHCALLS_MAX_CALLS_PER_BATCH="3")
    response = assert_refused(api, 422, "invalid_request", {"calls"}, body=batch(4))
    assert "at most 3" in response.get_json()["error"]["details"]["calls"][0]
    # Counted before the calls are looked at: 4 calls that are not even objects are refused for
    # their number, not their shape.
    assert_refused(api, 422, "invalid_request", {"calls"}, body={"calls": [1, 2, 3, 4]})
    accepted(api, batch(3))
    set_policy(api, max_calls_per_batch=10)
    accepted(api, batch(4))


# -- 422 destination_not_allowed --------------------------------------------------------------


def test_premium_rate_and_satellite_numbers_are_refused_by_default(api: Api) -> None:
    body = {"calls": [call(0), call(1, phone_number=US_PREMIUM), call(2, phone_number=SATELLITE)]}
    response = assert_refused(
        api, 422, "destination_not_allowed", {"calls[1].phone_number", "calls[2].phone_number"}, body=body
    )
    details = response.get_json()["error"]["details"]
    assert "premium_rate" in details["calls[1].phone_number"][0]
    assert "non_geographic" in details["calls[2].phone_number"][0]


def test_a_tenants_destination_policy_replaces_the_default(api_factory: ApiFactory) -> None:
    api = api_factory()
    set_policy(api, allowed_countries=("US",))
    tenant = tenant_for_key(Database(api.pg.dsn), api.key)
    assert tenant is not None and tenant.policy.allowed_countries == ("US",)
    response = assert_refused(api, 422, "destination_not_allowed", {"calls[0].phone_number"}, body=batch(1))
    assert "is in GB" in response.get_json()["error"]["details"]["calls[0].phone_number"][0]
    accepted(api, {"calls": [call(0, phone_number=US)]})
    assert_refused(
        api,
        422,
        "destination_not_allowed",
        {"calls[0].phone_number"},
        body={"calls": [call(0, phone_number=US_PREMIUM)]},
    )
    set_policy(api, blocked_number_types=())  # this tenant may call premium-rate numbers
    accepted(api, {"calls": [call(0, phone_number=US_PREMIUM)]})
    # The defaults from settings apply to tenants without their own values.
    strict = api_factory(BATCHCALLS_ALLOWED_COUNTRIES="DE")
    assert_refused(strict, 422, "destination_not_allowed", {"calls[0].phone_number"}, body=batch(1))


def test_under_vonage_tenants_call_only_the_caller_ids_country_unless_allowed_more(api_factory: ApiFactory) -> None:
    """International revenue-share fraud dials ordinary numbers abroad: with
    BATCHCALLS_ALLOWED_COUNTRIES unset, Vonage calls stay in VONAGE_FROM_NUMBER's country."""
    application = make_application()
    vonage = {
        "BATCHCALLS_PROVIDER": "vonage",
        "VONAGE_SIGNATURE_SECRET": "s" * 40,
        "VONAGE_FROM_NUMBER": "+447700900001",
        "VONAGE_APPLICATION_ID": application.application_id,
        "VONAGE_PRIVATE_KEY": application.private_key_env,
    }
    api = api_factory(**vonage)
    accepted(api, batch(1))  # GB, the caller id's country
    response = assert_refused(
        api, 422, "destination_not_allowed", {"calls[0].phone_number"}, body={"calls": [call(0, phone_number=US)]}
    )
    assert "may call only GB" in response.get_json()["error"]["details"]["calls[0].phone_number"][0]
    # A tenant's own countries replace the default, as does an explicit `all` for every tenant.
    set_policy(api, allowed_countries=("GB", "US"))
    accepted(api, {"calls": [call(0, phone_number=US)]})
    everywhere = api_factory(**vonage, BATCHCALLS_ALLOWED_COUNTRIES="all")
    accepted(everywhere, {"calls": [call(0, phone_number=US)]})
    # The simulator costs nothing: every country, as before.
    accepted(api_factory(), {"calls": [call(0, phone_number=US)]})
