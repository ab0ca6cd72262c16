"""The dashboard in a real headless browser (Debian's chromium, driven by selenium through
Debian's chromedriver; installed with apt-get where missing, never downloaded by a package):
sign in, watch a batch reach `completed` without a reload, pause and resume a batch, cancel
another with its live calls hung up, suppress a number, open a call's attempts. A screenshot of
each page is kept under tests/artifacts/ (CI keeps it; git ignores it)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver

from tests.integration.test_dashboard import batch_of, wait_status
from tests.integration.test_pipeline import number
from tests.support import servers as support
from tests.support.stack import ROOT, Stack, start_stack

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = ROOT / "tests" / "artifacts"
CALL_SECONDS = 2.0  # long enough that the batch cancelled with hang-up has live calls to hang up


@pytest.fixture(scope="module")
def stack(servers: support.TestServers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with support.more_test_servers(servers) as own:
        running = start_stack(
            own.database_url,
            own.redis_url,
            Path(tmp_path_factory.mktemp("dashboard-browser")),
            BATCHCALLS_SIM_RING_SECONDS="0.2",
            BATCHCALLS_SIM_CALL_SECONDS=str(CALL_SECONDS),
        )
        try:
            yield running
        finally:
            running.stop()


def install_chromium() -> None:
    """Debian's chromium and its driver, from apt (the test runs as root, as CI does)."""
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return
    assert shutil.which("apt-get"), "no apt-get to install chromium with: install chromium and chromium-driver"
    install = ["apt-get", "install", "-y", "-q", "chromium", "chromium-driver"]
    if subprocess.run(install, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], check=True)
        subprocess.run(install, check=True)
    assert CHROMIUM.exists() and CHROMEDRIVER.exists()


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    install_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def until(condition: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    deadline = time.time() + timeout
    while not (value := condition()):
        assert time.time() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.1)
    return value


# Every visible form control named by a <label for> or aria-label; every header cell scoped.
UNLABELLED = """
return Array.from(document.querySelectorAll('input:not([type=hidden]), select, textarea, progress'))
  .filter(el => !el.getAttribute('aria-label') && !(el.id && document.querySelector('label[for="' + el.id + '"]')))
  .map(el => el.outerHTML)
  .concat(Array.from(document.querySelectorAll('th:not([scope])')).map(el => el.outerHTML));
"""


def shot(driver: WebDriver, name: str) -> None:
    """Keep a screenshot of the page, and check that its controls and table headers are labelled."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"dashboard-{name}.png"))
    assert driver.execute_script(UNLABELLED) == [], name


def text(driver: WebDriver, css: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def confirm(driver: WebDriver, button: str, page: str) -> None:
    """Press an action's button, then confirm on the confirmation page."""
    driver.find_element(By.ID, button).click()
    until(lambda: driver.find_elements(By.ID, "confirm"), f"the confirmation page of {button}")
    shot(driver, page)
    driver.find_element(By.ID, "confirm").click()
    until(lambda: driver.find_elements(By.ID, "batch-status"), "the batch page again")


def test_an_operator_watches_and_steers_batches(stack: Stack, browser: WebDriver) -> None:
    base = stack.api_url + "/dashboard"
    browser.get(base + "/batches")
    until(lambda: browser.find_elements(By.ID, "api_key"), "the sign-in page")
    shot(browser, "sign-in")
    browser.find_element(By.ID, "api_key").send_keys(stack.api_key + Keys.ENTER)  # the keyboard alone
    until(lambda: "Batches" in browser.title, "the batches page after sign-in")

    watched = batch_of(stack, 12, 4, 700)
    browser.get(f"{base}/batches/{watched}")
    browser.execute_script("window.notReloaded = true;")
    shot(browser, "batch-running")
    until(lambda: text(browser, "#batch-status") == "completed", "the batch page showing completed", timeout=90)
    assert browser.execute_script("return window.notReloaded === true;"), "the page was reloaded"
    assert browser.find_element(By.ID, "batch-progress").get_attribute("value") == "12"
    # The chart draws the batch's history: a bar of live calls per span and a line of dials.
    until(lambda: browser.find_elements(By.CSS_SELECTOR, "#timeline rect.live"), "the chart of the batch's life")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#timeline rect.live")) == 60
    assert browser.find_elements(By.CSS_SELECTOR, "#timeline polyline.dials")
    shot(browser, "batch-completed")

    paused = batch_of(stack, 40, 1, 800)
    browser.get(f"{base}/batches/{paused}")
    confirm(browser, "pause", "confirm-pause")
    assert text(browser, "#batch-status") == "paused" and stack.status(paused)["status"] == "paused"
    confirm(browser, "resume", "confirm-resume")
    assert stack.status(paused)["status"] in {"queued", "running"}

    cancelled = batch_of(stack, 40, 4, 900)
    browser.get(f"{base}/batches/{cancelled}")
    until(lambda: stack.status(cancelled)["in_progress"] > 0, "a live call to hang up")
    browser.find_element(By.ID, "hangup").click()
    browser.find_element(By.ID, "cancel").click()
    until(lambda: browser.find_elements(By.ID, "confirm"), "the cancel confirmation")
    assert browser.find_element(By.ID, "hangup_live_calls").is_selected()
    shot(browser, "confirm-cancel")
    browser.find_element(By.ID, "confirm").click()
    until(lambda: browser.find_elements(By.ID, "batch-status"), "the batch page again")
    assert text(browser, "#batch-status") == "cancelled"
    wait_status(stack, cancelled, {"cancelled"})
    ids = {c["id"] for c in stack.all_calls(cancelled)}
    until(lambda: any(h["call_id"] in ids for h in stack.sim_hangups()), "a live call of it hung up")

    suppressed = number(950, 3)
    browser.find_element(By.ID, "phone_number").send_keys(suppressed)
    browser.find_element(By.ID, "reason").send_keys("asked in the browser")
    browser.find_element(By.ID, "suppress").click()
    until(lambda: f"{suppressed} suppressed." in browser.page_source, "the suppression's message")
    listed = requests.get(
        f"{stack.api_url}/v1/suppressions", params={"phone_number": suppressed}, headers=stack.headers(), timeout=30
    )
    assert [s["reason"] for s in listed.json()["suppressions"]] == ["asked in the browser"]
    browser.get(f"{base}/batches")
    shot(browser, "batches")

    browser.get(f"{base}/batches/{watched}/calls")
    shot(browser, "calls")
    browser.find_element(By.CSS_SELECTOR, "tbody th a").click()
    until(lambda: browser.find_elements(By.ID, "attempts"), "the call's attempts")
    assert "completed" in text(browser, "#attempts")
    shot(browser, "call")

    browser.get(f"{base}/fleet")
    until(lambda: "answered" in text(browser, "#workers-note"), "the workers' answer")
    assert browser.find_elements(By.CSS_SELECTOR, "#workers li")
    shot(browser, "fleet")
    # End the paused-and-resumed batch: no later test of the session waits for its calls.
    requests.post(f"{stack.api_url}/v1/batches/{paused}/cancel", headers=stack.headers(), timeout=30)
