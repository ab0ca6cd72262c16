"""The operator's dashboard on the real stack (the API over HTTP, worker processes, Postgres,
Redis, the simulator): no page without a session, a bad key refused, another tenant's batch a
404 on every page and action, POSTs without the session's CSRF token refused, and the actions
changing what the API's status shows."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
import requests

from batchcalls.adapters.store.keys import revoke_exact_key
from batchcalls.adapters.store.tenants import create_key
from tests.integration.test_pipeline import number
from tests.support.stack import Stack

pytestmark = pytest.mark.integration

D = "/dashboard"
TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def token_of(page: requests.Response) -> str:
    found = TOKEN.search(page.text)
    assert found, page.text[:500]
    return found.group(1)


def signed_in(stack: Stack, key: str) -> tuple[requests.Session, str]:
    """A browser-like session signed in with `key`, and its CSRF token."""
    browser = signed_in_at(stack.api_url, key)
    return browser, token_of(browser.get(f"{stack.api_url}{D}/batches", timeout=30))


def signed_in_at(api_url: str, key: str) -> requests.Session:
    browser = requests.Session()
    form = browser.get(f"{api_url}{D}/sign-in", timeout=30)
    answer = browser.post(f"{api_url}{D}/sign-in", data={"api_key": key, "csrf_token": token_of(form)}, timeout=30)
    assert answer.status_code == 200 and "Sign out" in answer.text, answer.text[:500]
    return browser


def batch_of(stack: Stack, calls: int, concurrency: int, first: int) -> str:
    body = {
        "calls": [{"phone_number": number(first + i, 0), "script": {"text": "Hi"}} for i in range(calls)],
        "concurrency": concurrency,
    }
    return str(stack.submit(body)["batch_id"])


def wait_status(stack: Stack, batch_id: str, wanted: set[str], timeout: float = 30) -> dict[str, Any]:
    deadline = time.time() + timeout
    while (body := stack.status(batch_id))["status"] not in wanted:
        assert time.time() < deadline, f"{batch_id} is {body['status']}, not one of {wanted}"
        time.sleep(0.1)
    return body


def pages_of(batch_id: str, call_id: str) -> list[str]:
    return [
        f"{D}/batches/{batch_id}",
        f"{D}/batches/{batch_id}/live",
        f"{D}/batches/{batch_id}/history",
        f"{D}/batches/{batch_id}/calls",
        f"{D}/batches/{batch_id}/calls/{call_id}",
        f"{D}/batches/{batch_id}/results?format=csv",
    ]


def test_no_page_without_a_session(stack: Stack) -> None:
    batch_id = batch_of(stack, 1, 1, 100)
    call_id = stack.all_calls(batch_id)[0]["id"]
    for path in [
        f"{D}/",
        f"{D}/batches",
        f"{D}/fleet",
        f"{D}/fleet/live",
        f"{D}/fleet/workers",
        *pages_of(batch_id, call_id),
    ]:
        answer = requests.get(f"{stack.api_url}{path}", allow_redirects=False, timeout=30)
        assert answer.status_code in (302, 308), (path, answer.status_code)
        if path != f"{D}/":
            assert f"{D}/sign-in" in answer.headers["Location"], path
    anonymous = requests.Session()
    token = token_of(anonymous.get(f"{stack.api_url}{D}/sign-in", timeout=30))
    for action in ("pause", "resume", "cancel"):
        answer = anonymous.post(
            f"{stack.api_url}{D}/batches/{batch_id}/{action}",
            data={"csrf_token": token, "confirmed": "yes"},
            timeout=30,
        )
        assert answer.status_code == 403, action
    answer = anonymous.post(
        f"{stack.api_url}{D}/suppressions", data={"csrf_token": token, "phone_number": number(101, 0)}, timeout=30
    )
    assert answer.status_code == 403


def test_a_bad_key_is_refused_and_the_cookie_is_strict(stack: Stack) -> None:
    browser = requests.Session()
    form = browser.get(f"{stack.api_url}{D}/sign-in", timeout=30)
    answer = browser.post(
        f"{stack.api_url}{D}/sign-in", data={"api_key": "bc_live_not-a-key", "csrf_token": token_of(form)}, timeout=30
    )
    assert answer.status_code == 401 and "not a live API key" in answer.text
    assert browser.get(f"{stack.api_url}{D}/batches", allow_redirects=False, timeout=30).status_code == 302
    # Without the form's token even a good key is refused.
    answer = requests.post(f"{stack.api_url}{D}/sign-in", data={"api_key": stack.api_key}, timeout=30)
    assert answer.status_code == 403
    good = requests.Session()
    form = good.get(f"{stack.api_url}{D}/sign-in", timeout=30)
    answer = good.post(
        f"{stack.api_url}{D}/sign-in",
        data={"api_key": stack.api_key, "csrf_token": token_of(form)},
        allow_redirects=False,
        timeout=30,
    )
    assert answer.status_code == 303
    cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/dashboard" in cookie
    assert "Secure" not in cookie  # served over plain http here
    assert stack.api_key not in cookie


def test_revoking_the_key_ends_its_sessions_and_signing_out_ends_one(stack: Stack) -> None:
    tenant_name = "dash-revoked-" + str(time.time_ns())
    _, key = create_key(stack.db, tenant_name)
    browser, token = signed_in(stack, key)
    assert browser.get(f"{stack.api_url}{D}/batches", allow_redirects=False, timeout=30).status_code == 200
    assert revoke_exact_key(stack.db, key, tenant=tenant_name)
    assert browser.get(f"{stack.api_url}{D}/batches", allow_redirects=False, timeout=30).status_code == 302
    browser, token = signed_in(stack, stack.api_key)
    assert browser.post(f"{stack.api_url}{D}/sign-out", data={"csrf_token": token}, timeout=30).status_code == 200
    assert browser.get(f"{stack.api_url}{D}/batches", allow_redirects=False, timeout=30).status_code == 302


def test_the_cookie_is_secure_over_https(stack: Stack) -> None:
    client = stack._server.app.test_client()
    form = client.get(f"{D}/sign-in", base_url="https://dashboard.example")
    answer = client.post(
        f"{D}/sign-in",
        data={"api_key": stack.api_key, "csrf_token": token_of(form)},
        base_url="https://dashboard.example",
    )
    assert answer.status_code == 303
    cookie = answer.headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie


def test_another_tenants_batch_is_404_on_every_page_and_action(stack: Stack) -> None:
    batch_id = batch_of(stack, 3, 1, 200)
    call_id = stack.all_calls(batch_id)[0]["id"]
    _, other_key = create_key(stack.db, "dash-other-" + str(time.time_ns()))
    other, token = signed_in(stack, other_key)
    for path in pages_of(batch_id, call_id):
        assert other.get(f"{stack.api_url}{path}", timeout=30).status_code == 404, path
    before = stack.status(batch_id)["status"]
    for action in ("pause", "resume", "cancel"):
        for confirmed in ("", "yes"):
            answer = other.post(
                f"{stack.api_url}{D}/batches/{batch_id}/{action}",
                data={"csrf_token": token, "confirmed": confirmed, "hangup_live_calls": "yes"},
                timeout=30,
            )
            assert answer.status_code == 404, (action, confirmed)
    answer = other.post(
        f"{stack.api_url}{D}/suppressions",
        data={"csrf_token": token, "phone_number": number(201, 0), "batch_id": batch_id},
        timeout=30,
    )
    assert answer.status_code == 404
    assert stack.status(batch_id)["status"] in {before, "running", "completed", "failed"}
    assert stack.status(batch_id)["status"] != "cancelled"
    listed = other.get(f"{stack.api_url}{D}/batches", timeout=30)
    assert batch_id not in listed.text


def test_posts_without_the_csrf_token_are_refused(stack: Stack) -> None:
    batch_id = batch_of(stack, 30, 1, 300)
    browser, token = signed_in(stack, stack.api_key)
    for data in ({"confirmed": "yes"}, {"confirmed": "yes", "csrf_token": token[:-2] + "xx"}):
        for action in ("pause", "cancel"):
            answer = browser.post(f"{stack.api_url}{D}/batches/{batch_id}/{action}", data=data, timeout=30)
            assert answer.status_code == 403, (action, data)
        answer = browser.post(
            f"{stack.api_url}{D}/suppressions", data={**data, "phone_number": number(301, 0)}, timeout=30
        )
        assert answer.status_code == 403
    assert stack.status(batch_id)["status"] in {"queued", "running"}
    listed = requests.get(
        f"{stack.api_url}/v1/suppressions", params={"phone_number": number(301, 0)}, headers=stack.headers(), timeout=30
    )
    assert listed.json()["suppressions"] == []
    # Another session's token is not this one's.
    _, foreign = signed_in(stack, stack.api_key)
    answer = browser.post(
        f"{stack.api_url}{D}/batches/{batch_id}/pause", data={"csrf_token": foreign, "confirmed": "yes"}, timeout=30
    )
    assert answer.status_code == 403
    browser.post(
        f"{stack.api_url}{D}/batches/{batch_id}/cancel", data={"csrf_token": token, "confirmed": "yes"}, timeout=30
    )


def test_actions_change_what_the_api_shows(stack: Stack) -> None:
    batch_id = batch_of(stack, 40, 1, 400)
    browser, token = signed_in(stack, stack.api_key)
    url = f"{stack.api_url}{D}/batches/{batch_id}"
    asked = browser.post(f"{url}/pause", data={"csrf_token": token}, timeout=30)
    assert asked.status_code == 200 and "Yes, pause it" in asked.text
    assert stack.status(batch_id)["status"] in {"queued", "running"}  # not before the confirmation
    done = browser.post(f"{url}/pause", data={"csrf_token": token, "confirmed": "yes"}, timeout=30)
    assert done.status_code == 200 and "pause done" in done.text
    assert stack.status(batch_id)["status"] == "paused"
    browser.post(f"{url}/resume", data={"csrf_token": token, "confirmed": "yes"}, timeout=30)
    assert stack.status(batch_id)["status"] in {"queued", "running"}
    live = browser.get(f"{url}/live", timeout=30).json()
    assert live["batch"]["batch_id"] == batch_id and live["batch"]["total_calls"] == 40
    browser.post(
        f"{url}/cancel", data={"csrf_token": token, "confirmed": "yes", "hangup_live_calls": "yes"}, timeout=30
    )
    assert wait_status(stack, batch_id, {"cancelled"})["cancelled_calls"] > 0
    suppressed = number(401, 7)
    answer = browser.post(
        f"{stack.api_url}{D}/suppressions",
        data={"csrf_token": token, "phone_number": suppressed, "reason": "asked", "batch_id": batch_id},
        timeout=30,
    )
    assert f"{suppressed} suppressed." in answer.text
    listed = requests.get(
        f"{stack.api_url}/v1/suppressions", params={"phone_number": suppressed}, headers=stack.headers(), timeout=30
    )
    assert [s["reason"] for s in listed.json()["suppressions"]] == ["asked"]


def test_pages_show_the_tenants_batches_calls_and_results(stack: Stack) -> None:
    batch_id = batch_of(stack, 3, 3, 500)
    stack.wait_finished(batch_id)
    browser, _ = signed_in(stack, stack.api_key)
    base = stack.api_url + D
    assert batch_id in browser.get(f"{base}/batches", timeout=30).text
    assert batch_id in browser.get(f"{base}/batches", params={"status": "completed"}, timeout=30).text
    assert batch_id not in browser.get(f"{base}/batches", params={"status": "paused"}, timeout=30).text
    calls = browser.get(f"{base}/batches/{batch_id}/calls", params={"number": number(501, 0)}, timeout=30)
    assert number(501, 0) in calls.text and number(500, 0) not in calls.text
    call_id = stack.all_calls(batch_id)[1]["id"]
    call = browser.get(f"{base}/batches/{batch_id}/calls/{call_id}", timeout=30)
    assert call.status_code == 200 and 'id="attempts"' in call.text
    export = browser.get(f"{base}/batches/{batch_id}/results", params={"format": "csv"}, timeout=30)
    api_export = requests.get(
        f"{stack.api_url}/v1/batches/{batch_id}/results", params={"format": "csv"}, headers=stack.headers(), timeout=30
    )
    assert export.status_code == 200 and export.text == api_export.text
    fleet = browser.get(f"{base}/fleet/workers", timeout=30).json()
    assert fleet["workers"]
    assert browser.get(f"{base}/batches", params={"status": "nonsense"}, timeout=30).status_code == 422


def test_the_history_shows_every_dial_and_no_more_live_calls_than_the_concurrency(stack: Stack) -> None:
    batch_id = batch_of(stack, 12, 3, 700)
    browser, _ = signed_in(stack, stack.api_key)
    stack.wait_finished(batch_id)
    history = browser.get(f"{stack.api_url}{D}/batches/{batch_id}/history", timeout=30).json()
    assert len(history["spans"]) == 60 and history["span_seconds"] > 0
    assert sum(span["dials"] for span in history["spans"]) == 12  # one attempt per call here
    assert max(span["live"] for span in history["spans"]) <= 3  # live at each span's end
    assert history["spans"][-1]["live"] == 0  # every call ended
