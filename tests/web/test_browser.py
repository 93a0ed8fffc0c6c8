"""The pages in real headless Chromium (Debian's package, driven by Playwright).

These run on SQLite only, against one app served by uvicorn in a background thread: the same
routes run on both backends in ``test_pages.py``, and one browser session keeps the gate fast.
Screenshots of every page land in ``tests/web/output/`` (git-ignored).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import Browser, Page, expect, sync_playwright

from aidmatch.auth import service as auth_service
from aidmatch.config import Settings
from aidmatch.database import make_engine, make_sessionmaker
from aidmatch.enums import Role
from aidmatch.main import create_app
from aidmatch.web import service as web_service
from geo.geocoding import GazetteerGeocoder
from tests.databases import migrated_database

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parent / "output"
# The same check as the acceptance script: a visible field with no label, aria-label or aria-labelledby.
UNLABELLED_JS = """() => [...document.querySelectorAll('input,select,textarea')]
    .filter(e => !['hidden','submit','button'].includes(e.type))
    .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.getAttribute('aria-labelledby'))
    .map(e => e.name || e.id)"""


@dataclass(frozen=True)
class Live:
    base: str
    token: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, gazetteer: GazetteerGeocoder) -> Iterator[Live]:
    port = _free_port()
    with migrated_database("sqlite", tmp_path_factory.mktemp("browser-db")) as url:
        settings = Settings(
            database_url=url, public_url=f"http://127.0.0.1:{port}", scheduler_enabled=False, _env_file=None
        )
        engine = make_engine(url)
        with make_sessionmaker(engine)() as session:
            _, token = auth_service.create(session=session, name="browser coordinator", role=Role.coordinator)
            session.commit()
        engine.dispose()
        app = create_app(settings, geocoder=gazetteer)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", ws="none"))
        thread = threading.Thread(target=server.run, name="uvicorn-browser-tests", daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                pytest.fail("uvicorn did not start for the browser tests")
            time.sleep(0.05)
        try:
            yield Live(base=f"http://127.0.0.1:{port}", token=token)
        finally:
            server.should_exit = True
            thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("CI=true but Chromium is not installed (make test installs it)")
        pytest.skip("Chromium is not installed; `make test` installs it")
    SHOTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def fill_need(page: Page, *, phone: str, address: str = "Тума") -> None:
    page.select_option("[name=category]", "water")
    page.fill("[name=quantity]", "3")
    page.locator("[name=urgency][value=urgent]").check()
    page.fill("[name=address]", address)
    page.fill("[name=description]", "нет воды, двое пожилых")
    page.fill("[name=contact_name]", "Мария")
    page.fill("[name=contact_phone]", phone)


def test_need_to_status_to_dashboard_to_accept(live: Live, browser: Browser) -> None:
    """The whole loop in the browser: a helper offers, a person asks, the coordinator sees, the helper accepts."""
    page = browser.new_page()
    # A helper registers an offer near Тума and keeps their private task link.
    page.goto(live.base + "/offer")
    assert page.evaluate(UNLABELLED_JS) == []
    page.locator("[name=categories][value=water]").check()
    page.fill("[name=capacity]", "5")
    page.fill("[name=radius_km]", "30")
    page.fill("[name=address]", "Тума")
    page.fill("[name=phone]", "+79160000001")
    shot(page, "offer-form")
    page.get_by_role("button", name="Предложить помощь").click()
    task_link = page.locator("#task-link").get_attribute("href")
    assert task_link
    assert task_link.startswith("/tasks/")
    shot(page, "offer-done")

    # The person in need fills the form.
    page.goto(live.base + "/need")
    assert page.evaluate(UNLABELLED_JS) == []
    expect(page.locator("#use-location")).to_be_visible()  # JavaScript shows the location buttons
    fill_need(page, phone="+79161234567")
    shot(page, "need-form")
    page.get_by_role("button", name="Отправить заявку").click()
    expect(page).to_have_url(re.compile(r"/status/[A-Z0-9]{6}\?new=1$"))
    code = page.locator("#need-code").inner_text()
    expect(page.locator(".notice")).to_contain_text(code)
    expect(page.locator("#need-status")).to_have_attribute("data-status", "open")
    assert "+7916" not in page.content()
    shot(page, "status-new")

    # Anyone with the code opens the status page from the landing page.
    page.goto(live.base + "/")
    page.fill("#code", code.lower())
    page.get_by_role("button", name="Проверить").click()
    expect(page).to_have_url(re.compile(f"/status/{code}$"))

    # The coordinator sees it on the map and in the tables (bearer token header).
    ctx = browser.new_context(extra_http_headers={"Authorization": f"Bearer {live.token}"})
    dash = ctx.new_page()
    dash.goto(live.base + "/dashboard")
    expect(dash.locator(".leaflet-container")).to_have_count(1)
    expect(dash.locator("#map")).to_have_attribute("data-needs", "1")
    expect(dash.locator("#map .need-marker")).to_have_count(1)
    expect(dash.locator("#open-needs")).to_contain_text(code)
    expect(dash.locator(".place-label").first).to_be_attached()  # settlement labels without tiles
    shot(dash, "dashboard")
    ctx.close()

    # The helper accepts from their task page; the contact appears only then.
    page.goto(live.base + task_link)
    task = page.locator("article.task").first
    expect(task).to_contain_text("Питьевая вода")
    expect(task.locator(".contact")).not_to_contain_text("+7916")
    shot(page, "tasks-proposed")
    task.get_by_role("button", name="Беру").click()
    expect(page.locator("#flash")).to_be_visible()
    expect(page.locator("article.task .contact").first).to_contain_text("+79161234567")
    shot(page, "tasks-accepted")

    page.goto(f"{live.base}/status/{code}")
    expect(page.locator("#need-status")).to_have_attribute("data-status", "assigned")
    expect(page.locator("#stage-accepted")).to_have_class("done")
    shot(page, "status-accepted")

    page.goto(live.base + task_link)
    page.locator("article.task").first.get_by_role("button", name="Сделано").click()
    page.goto(f"{live.base}/status/{code}")
    expect(page.locator("#need-status")).to_have_attribute("data-status", "fulfilled")
    shot(page, "status-fulfilled")
    page.close()


def test_need_form_without_javascript(live: Live, browser: Browser) -> None:
    """A cheap phone with scripts off: the form, its errors and the status page all still work."""
    ctx = browser.new_context(java_script_enabled=False)
    page = ctx.new_page()
    page.goto(live.base + "/need?lang=en")
    expect(page.locator(".js-only")).to_be_hidden()
    page.fill("[name=contact_phone]", "12")
    page.fill("[name=description]", "kept as typed")
    page.get_by_role("button", name="Send the request").click()
    expect(page.locator("#error-summary")).to_contain_text("Choose what is needed.")
    expect(page.locator("[name=description]")).to_have_value("kept as typed")
    expect(page.locator("[name=contact_phone]")).to_have_value("12")
    shot(page, "need-errors-nojs")
    fill_need(page, phone="+79167654321", address="Рязань")
    page.get_by_role("button", name="Send the request").click()
    expect(page).to_have_url(re.compile(r"/status/[A-Z0-9]{6}\?new=1$"))
    expect(page.locator("body")).to_contain_text("Write down its code")
    shot(page, "status-nojs")
    ctx.close()


def test_keyboard_only_need_form_and_login(live: Live, browser: Browser) -> None:
    """Tab reaches the submit button with a visible focus ring, and Enter submits; the login works too."""
    page = browser.new_page()
    page.goto(live.base + "/need")
    fill_need(page, phone="+79165550011")
    page.locator("[name=category]").focus()
    for _ in range(80):
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.type") == "submit":
            break
    else:
        pytest.fail("Tab never reached the submit button")
    outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none", "the focused button shows where the focus is"
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/status/[A-Z0-9]{6}\?new=1$"))

    page.goto(live.base + "/dashboard")
    expect(page).to_have_url(re.compile("/login"))
    assert page.evaluate(UNLABELLED_JS) == []
    page.fill("#token", live.token)
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile("/dashboard$"))
    expect(page.locator("h1")).to_have_text("Панель координатора")
    expect(page.locator("#map")).to_have_attribute("data-needs", re.compile(r"[1-9]"))
    assert page.evaluate(UNLABELLED_JS) == []
    shot(page, "dashboard-cookie")
    page.goto(live.base + "/dashboard?lang=en")
    expect(page.locator("h1")).to_have_text("Coordinator dashboard")
    page.close()


def test_dashboard_groups_close_needs_and_refreshes_itself(
    live: Live, browser: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Zoomed out, needs a few km apart show as one badge; a click zooms in; new needs appear without a
    reload; when there are more than the map draws, it says so."""
    ctx = browser.new_context(extra_http_headers={"Authorization": f"Bearer {live.token}"})
    api = ctx.request
    for k in range(3):
        r = api.post(
            live.base + "/api/needs",
            data={
                "category": "animals",
                "lat": 54.60 + 0.01 * k,
                "lon": 39.70,
                "urgency": "critical" if k else "normal",
            },
        )
        assert r.status == 201
    page = ctx.new_page()
    page.goto(live.base + "/dashboard?category=animals")
    expect(page.locator("#map")).to_have_attribute("data-needs", "3")
    badge = page.locator("#map .cluster")
    expect(badge).to_have_count(1)
    expect(badge).to_have_text("3")
    expect(badge).to_have_class(re.compile("urgency-critical"))  # the badge shows the worst urgency
    shot(page, "dashboard-cluster")
    badge.click()
    expect(page.locator("#map .need-marker")).to_have_count(3)

    code = api.post(live.base + "/api/needs", data={"category": "animals", "lat": 54.9, "lon": 39.9}).json()["code"]
    expect(page.locator("#open-needs")).not_to_contain_text(code)
    page.evaluate("() => window.aidmatchRefresh()")
    expect(page.locator("#open-needs")).to_contain_text(code)
    expect(page.locator("#map")).to_have_attribute("data-needs", "4")
    expect(page.locator("#map-capped")).to_be_hidden()
    monkeypatch.setattr(web_service, "MAP_MAX_SHOWN", 3)
    page.evaluate("() => window.aidmatchRefresh()")
    expect(page.locator("#map")).to_have_attribute("data-needs", "3")
    expect(page.locator("#map-capped")).to_be_visible()
    expect(page.locator("#map-capped")).to_contain_text("3 из 4")
    page.locator("#map").screenshot(path=str(SHOTS / "dashboard-capped.png"))
    ctx.close()


def test_api_docs_render_without_the_internet(live: Live, browser: Browser) -> None:
    """Swagger UI and ReDoc come from the app itself (this machine has no internet): both render
    the API's operations."""
    page = browser.new_page()
    try:
        page.goto(live.base + "/docs")
        page.get_by_text("/api/needs", exact=True).first.wait_for(timeout=20_000)
        page.goto(live.base + "/redoc")
        page.get_by_text("/api/needs", exact=False).first.wait_for(timeout=20_000)
    finally:
        page.close()
