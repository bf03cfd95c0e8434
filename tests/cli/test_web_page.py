"""The web page at `/` in a real headless Chromium (Debian's chromium + chromedriver, driven
by selenium; Selenium Manager is never asked to download anything), against the real API,
operator and runner: enter a key, upload a real PDF, wait for the events table, make a feed
link. `SCHEDGEN_SCREENSHOT=path.png` saves a screenshot of the finished page (docs/img)."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from api_testlib import FIXTURES, ApiProcess

from schedgen.client.render import EVENT_COLUMNS, event_cell
from schedgen.runner.parsing import parse_pdf

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT = 180


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager: never download a driver or browser
    opts = Options()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1600", "--force-device-scale-factor=1", "--lang=en"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def wait(driver, condition, timeout: float = WAIT, what: str = ""):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.25).until(condition, message=what)


def visible(element_id: str):
    from selenium.webdriver.common.by import By

    return lambda d: d.find_element(By.ID, element_id).is_displayed()


def csp_violations(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if "Content Security Policy" in e["message"]]


def test_upload_follow_events_and_feed(stack, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    d = browser
    d.get(stack.url + "/")
    wait(d, visible("key-section"), 20, "the page asks for a key (keys are required)")
    assert not d.find_element(By.ID, "upload-section").is_displayed()
    # every form control has a label; the landmarks are there
    assert d.execute_script("return [...document.querySelectorAll('input, select')]"
                            ".every(el => el.labels && el.labels.length > 0)")
    assert d.execute_script("return ['header', 'main', 'footer'].every(t => document.querySelector(t))")

    key = d.find_element(By.ID, "api-key")
    assert d.switch_to.active_element == key  # focus moved to the key field
    key.send_keys("sgk_wrong_" + "w" * 30, Keys.ENTER)
    wait(d, lambda d: "refused" in d.find_element(By.ID, "alert").text, 20, "a wrong key is refused")
    d.find_element(By.ID, "api-key").send_keys(stack.admin_key, Keys.ENTER)
    wait(d, visible("upload-section"), 20, "the key is accepted")
    assert d.execute_script("return sessionStorage.getItem('schedgen.apiKey')") == stack.admin_key

    pdf = FIXTURES / "up" / "UP_EXAM_SS.pdf"
    d.find_element(By.ID, "pdf").send_keys(str(pdf))
    d.find_element(By.ID, "upload-button").click()
    wait(d, visible("job-section"), 30, "the job appears")
    progress = d.find_element(By.ID, "job-progress")
    assert progress.get_attribute("aria-live") == "polite" and progress.get_attribute("role") == "status"
    wait(d, visible("events-section"), WAIT, "the events table appears")
    assert "Succeeded" in progress.text

    expected = parse_pdf(pdf).to_json()
    columns = EVENT_COLUMNS[expected["kind"]]
    headers = [th.text for th in d.find_elements(By.CSS_SELECTOR, "#events-table thead th")]
    assert headers == [label for label, _ in columns]
    rows = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]
            for tr in d.find_elements(By.CSS_SELECTOR, "#events-table tbody tr")]
    want = [[event_cell(e, key) for _, key in columns] for e in expected["events"]]
    assert len(rows) == len(want) == 5 and sorted(rows) == sorted(want)

    d.find_element(By.ID, "feed-create").click()
    wait(d, lambda d: d.find_element(By.ID, "feed-status").text, 30, "the feed answer")
    feed_url = d.find_element(By.ID, "feed-url").get_attribute("value")
    assert feed_url.startswith(stack.url + "/feeds/") and feed_url.endswith(".ics"), \
        d.find_element(By.ID, "feed-status").text
    assert d.find_element(By.ID, "feed-webcal").get_attribute("href").startswith("webcal://")
    ics = httpx.get(feed_url, timeout=30)  # no key: the token is the secret
    assert ics.status_code == 200 and ics.text.count("BEGIN:VEVENT") == 5

    def tenant_row():  # the queue is read again when the job finishes
        rows = [tr.text for tr in d.find_elements(By.CSS_SELECTOR, "#queue-table tbody tr")]
        return next((r for r in rows if r.startswith(stack.tenant + " ")), None)
    row = wait(d, lambda d: tenant_row(), 30, "the tenant's queue row")
    assert row.split()[1:4] == ["0", "0", "1"], row  # waiting, running, succeeded
    assert len(d.find_elements(By.CSS_SELECTOR, "#queue-chart polyline")) == 2
    assert csp_violations(d) == []

    shot = os.environ.get("SCHEDGEN_SCREENSHOT")
    if shot:
        height = d.execute_script("return document.documentElement.scrollHeight")
        d.set_window_size(1280, min(int(height) + 40, 4000))
        d.execute_script("const f = document.getElementById('feed-url'); f.setSelectionRange(0, 0); f.blur();"
                         "window.scrollTo(0, 0)")
        assert d.save_screenshot(str(Path(shot).resolve()))


def test_anonymous_server_asks_no_key_and_page_is_not_gated(stack, browser, tmp_path):
    """With anonymous access on, the page goes straight to the upload form; `/` and
    `/static/*` never need a key and carry the strict policy."""
    from selenium.webdriver.common.by import By

    env = {**stack.api.env, "SCHEDGEN_API_ALLOW_ANONYMOUS": "true"}
    api = ApiProcess(env, tmp_path / "api-anon.log").start()
    try:
        for base in (stack.url, api.url):
            page = httpx.get(base + "/", timeout=10)
            assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
            assert httpx.get(base + "/static/app.js", timeout=10).status_code == 200
        assert httpx.get(stack.url + "/api/v1/queue", timeout=10).status_code == 401
        browser.execute_script("sessionStorage.clear()")
        browser.get(api.url + "/")
        wait(browser, visible("upload-section"), 20, "no key needed")
        assert not browser.find_element(By.ID, "key-section").is_displayed()
        assert "Anonymous" in browser.find_element(By.ID, "session-text").text
    finally:
        api.stop()
