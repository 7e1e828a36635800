"""The dashboard in a real headless Chromium (Debian's, driven by Playwright) against a
live server with the example models: every page, a JSON inference, an image upload,
client tabs, copy and download, metrics charts, basic auth, and a phone-sized screen."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from playwright.sync_api import Error as PlaywrightError

from sts.model_config import load_model_config_file
from tests import fakes
from tests.conftest import ROOT, LiveServer, fake_config, settings

CHROMIUM = "/usr/bin/chromium"
SHOTS = ROOT / "test-artifacts" / "screenshots"
DIGIT = ROOT / "examples" / "images" / "digit.png"


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    configs = load_model_config_file(ROOT / "examples" / "models.json")
    with LiveServer(settings(), configs) as live:
        yield live


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), "Debian's chromium is not installed (make test installs it)"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


def watch(page: Page, expected_status: int) -> list[str]:
    """The script errors and failed loads of `page`, as they happen; a load answered
    `expected_status` (an answer the test asks for on purpose) is not one."""
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    expected = f"status of {expected_status}"
    page.on(
        "console",
        lambda m: problems.append(m.text) if m.type == "error" and expected not in m.text else None,
    )
    return problems


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    problems = watch(opened, 400)  # the try-it form sends bad input on purpose
    yield opened
    context.close()
    assert not problems, problems  # no script errors, no failed loads


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_overview_lists_every_model_and_version(server: LiveServer, page: Page) -> None:
    page.goto(server.url + "/")
    for name in ("default", "digits", "digits_tf", "iris", "colours", "text"):
        section = page.locator(f"section.model[data-model='{name}']")
        assert section.count() == 1, name
        assert "AVAILABLE" in section.inner_text(), name
    assert "stable" in page.locator("section.model[data-model='digits']").inner_text()
    assert page.locator("#server-state").inner_text() == "ready"
    shot(page, "overview")
    page.click("section.model[data-model='iris'] h2 a")
    page.wait_for_url("**/dashboard/models/iris")
    assert page.locator("h1").inner_text().startswith("iris")


def test_json_inference_from_the_try_it_form(server: LiveServer, page: Page) -> None:
    page.goto(server.url + "/dashboard/models/iris")
    assert '"features"' in page.locator("#request").input_value()  # prefilled from gen_json
    page.fill("#request", '{"model_name": "iris", "data": {"features": [[5.1, 3.5, 1.4, 0.2]]}}')
    page.click("#send")
    page.wait_for_selector("#response:not(:empty)")
    assert '"classes": [\n    0\n  ]' in page.locator("#response").inner_text()
    assert page.locator("#request-status").inner_text().startswith("200 OK · ")
    page.fill("#request", '{"model_name": "iris", "data": {}}')
    page.click("#send")
    page.wait_for_function(
        "document.querySelector('#request-status').textContent.startsWith('400')"
    )
    assert "missing input(s) ['features']" in page.locator("#response").inner_text()
    assert page.locator("#upload").is_hidden()  # iris takes no images


def test_image_upload_with_preview(server: LiveServer, page: Page) -> None:
    page.goto(server.url + "/dashboard/models/digits")
    assert page.locator("#upload").is_visible()
    assert page.locator("#send-image").is_disabled()
    page.set_input_files("#image-file", str(DIGIT))
    page.wait_for_selector("#preview:not([hidden])")
    page.click("#send-image")
    page.wait_for_selector("#image-response:not(:empty)")
    assert '"classes": [\n    8\n  ]' in page.locator("#image-response").inner_text()
    shot(page, "model")


def test_client_tabs_copy_and_download(server: LiveServer, browser: Browser) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    page = context.new_page()
    page.goto(server.url + "/dashboard/models/text")
    code = page.locator("#client-code")
    page.wait_for_function("document.querySelector('#client-code').textContent.length > 0")
    assert code.inner_text().startswith("#!/usr/bin/env bash")
    for language, marker in (("python", "urllib.request"), ("golang", "package main"),
                             ("javascript", ".request("), ("json", '"model_name"')):  # fmt: skip
        page.click(f".tab[data-language='{language}']")
        page.wait_for_function(
            "m => document.querySelector('#client-code').textContent.includes(m)", arg=marker
        )
    page.click(".tab[data-language='golang']")
    page.select_option("#protocol", "v2")
    page.wait_for_function(
        "document.querySelector('#client-code').textContent.includes('/v2/models/text/infer')"
    )
    curl = page.locator("#curl-line").inner_text()
    assert "language=golang" in curl
    assert curl.endswith("> client.go && go run client.go")
    page.select_option("#signature", "join")
    page.wait_for_function(
        "document.querySelector('#client-code').textContent.includes('signature \\\"join\\\"')"
    )
    with page.expect_download() as download:
        page.click("#download")
    assert download.value.suggested_filename == "client.go"
    assert Path(download.value.path()).read_text() == code.inner_text()
    page.click("#copy")
    page.wait_for_selector("#copy-status:text('copied')")
    assert page.evaluate("navigator.clipboard.readText()") == code.inner_text()
    context.close()


def test_metrics_page_draws_what_the_server_counted(server: LiveServer, page: Page) -> None:
    for _ in range(4):
        httpx.post(server.url, json={"model_name": "iris", "data": {"features": [[1, 2, 3, 4]]}})
    httpx.post(server.url, json={"model_name": "iris", "data": {}})
    page.goto(server.url + "/dashboard/metrics")
    totals = page.locator(".chart-block[data-model='iris'] .totals")
    page.wait_for_function(
        "document.querySelector(\".chart-block[data-model='iris'] .totals\").textContent"
        ".includes('requests')"
    )
    words = totals.inner_text().split()  # "<n> requests, <m> errors in the last 300 s"
    assert int(words[0]) >= 5  # earlier tests asked iris too
    assert int(words[2]) >= 1
    blank = page.evaluate("document.createElement('canvas').toDataURL()")
    drawn = page.evaluate(
        "document.querySelector(\".chart-block[data-model='iris'] canvas.rate\").toDataURL()"
    )
    assert drawn != blank
    shot(page, "metrics")


def test_a_phone_sized_screen(server: LiveServer, browser: Browser) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = context.new_page()
    for path, name in (("/", "overview-phone"), ("/dashboard/models/digits", "model-phone"),
                       ("/dashboard/metrics", "metrics-phone")):  # fmt: skip
        page.goto(server.url + path)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, (path, width)  # nothing wider than the screen
        shot(page, name)
        # Paths and names are as long as the machine makes them (a CI checkout lives
        # deeper than a laptop's): long unbroken ones must wrap, not widen the page.
        page.evaluate(
            "for (const e of document.querySelectorAll('h1, h2 a, .path, summary code'))"
            " e.textContent = '/' + 'checkout'.repeat(12) + '/examples/models/digits';"
        )
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, (path, "with long paths", width)
    context.close()


def test_everything_works_under_basic_auth(tmp_path: Path, browser: Browser) -> None:
    fakes.write_version(tmp_path / "m", 1)
    secured = settings(enable_auth=True, host="127.0.0.1", auth_password="s3cret")
    with LiveServer(secured, [fake_config("m", tmp_path / "m")]) as live:
        anonymous = browser.new_context()
        page = anonymous.new_page()
        # Headless Chromium cannot answer the login prompt: navigation fails on the 401.
        with pytest.raises(PlaywrightError, match="ERR_INVALID_AUTH_CREDENTIALS"):
            page.goto(live.url + "/")
        response: Any = anonymous.request.get(live.url + "/")
        assert response.status == 401
        assert response.headers["www-authenticate"].startswith('Basic realm="sts"')
        anonymous.close()
        logged_in = browser.new_context(
            http_credentials={"username": "admin", "password": "s3cret"}
        )
        page = logged_in.new_page()
        assert page.goto(live.url + "/").status == 200
        page.goto(live.url + "/dashboard/models/m")
        page.click("#send")  # the page's own API calls carry the credentials too
        page.wait_for_selector("#response:not(:empty)")
        assert page.locator("#request-status").inner_text().startswith("200")
        assert page.goto(live.url + "/static/sts.css").status == 200
        logged_in.close()


@pytest.mark.parametrize(
    ("path", "shown"),
    [
        # Swagger UI: one block per operation, with its path.
        ("/docs", ".opblock-summary-path[data-path='/v2/models/{model_name}/infer']"),
        # ReDoc: a heading per operation.
        ("/redoc", "h2:has-text('Predict (the original protocol)')"),
    ],
)
def test_api_docs_render_with_the_network_blocked(
    server: LiveServer, browser: Browser, path: str, shown: str
) -> None:
    """Air-gapped hosts: every asset of /docs and /redoc comes from sts itself."""
    context = browser.new_context()
    outside: list[str] = []

    def only_loopback(route: Any) -> None:
        host = urlsplit(route.request.url).hostname
        if host in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort("internetdisconnected")

    context.route("**/*", only_loopback)
    page = context.new_page()
    page.goto(server.url + path)
    page.locator(shown).first.wait_for(timeout=30_000)
    shot(page, path.strip("/"))
    context.close()
    assert outside == [], f"{path} asked for {outside}"


def test_overview_reads_at_a_glance(server: LiveServer, page: Page) -> None:
    page.goto(server.url + "/")
    digits = page.locator("section.model[data-model='digits'] .path").inner_text()
    iris = page.locator("section.model[data-model='iris'] .path").inner_text()
    assert "· 2 versions ·" in digits
    assert "· 1 version ·" in iris
    # Load times and a framework's first import are shown apart.
    statuses = [
        (m["model_name"], v)
        for m in httpx.get(server.url + "/v1/models").json()
        for v in m["versions"]
    ]
    # Which versions paid for an import depends on what this test process imported before
    # the server started (in a full run, earlier tests imported every framework): each row's
    # note must agree with its own status either way.
    for name, status in statuses:
        row = f"section.model[data-model='{name}'] tr[data-version='{status['version']}']"
        note = page.locator(f"{row} td.load .import")
        imported = status["import_seconds"] or 0
        # The model's load time and the framework's first import are shown apart.
        expected = status["load_seconds"] is not None and imported >= 0.05
        assert note.count() == (1 if expected else 0), (name, status)
        if expected:
            assert f"{imported:.1f} s importing" in note.first.inner_text()
    # A long error wraps in its own column; the others keep their width.
    page.evaluate(
        "document.querySelector(\"section.model[data-model='iris'] td.error\").textContent ="
        " 'failed: ' + 'a_very_long_error_message_without_spaces'.repeat(20)"
    )
    state = page.locator("section.model[data-model='iris'] .state").first
    assert state.evaluate("e => e.getClientRects().length") == 1  # not broken over lines
    box = state.bounding_box()
    assert box is not None
    assert box["width"] > 40
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    shot(page, "overview-long-error")


def test_try_it_picks_a_version_or_label(server: LiveServer, page: Page) -> None:
    page.goto(server.url + "/dashboard/models/digits")
    assert "2 versions serving: 1, 2" in page.locator(".path").inner_text()
    options = page.locator("#version option").all_inner_texts()
    assert options[:3] == ["latest", "2", "1"]
    assert {"stable (→ 1)", "canary (→ 2)"} <= set(options)
    assert "model_version" not in page.locator("#request").input_value()
    for choice, sent in (("1", "1"), ("canary", '"canary"')):
        page.select_option("#version", choice)
        assert f'"model_version": {sent}' in page.locator("#request").input_value()
        page.click("#send")
        page.wait_for_function(
            "document.querySelector('#request-status').textContent.startsWith('200')"
        )
        page.evaluate("document.querySelector('#request-status').textContent = ''")
    page.select_option("#version", "latest")
    assert "model_version" not in page.locator("#request").input_value()
    page.select_option("#version", "stable")
    page.set_input_files("#image-file", str(DIGIT))
    page.wait_for_selector("#preview:not([hidden])")
    page.evaluate(  # what the form sends (Playwright does not show multipart bodies)
        "() => { window.sent = []; const send = window.fetch; window.fetch = (url, options) =>"
        " { window.sent.push(options.body.get('model_version')); return send(url, options); } }"
    )
    page.click("#send-image")
    page.wait_for_selector("#image-response:not(:empty)")
    assert '"classes": [\n    8\n  ]' in page.locator("#image-response").inner_text()
    assert page.evaluate("window.sent") == ["stable"]


def test_metrics_axes_and_words(server: LiveServer, page: Page) -> None:
    page.goto(server.url + "/dashboard/metrics")
    legend = page.locator(".chart-block[data-model='iris'] .legend")
    assert legend.inner_text().split() == ["p50", "p99"]
    colours = legend.locator(".key").evaluate_all(
        "keys => keys.map(k => getComputedStyle(k).backgroundColor)"
    )
    assert colours == ["rgb(26, 127, 55)", "rgb(154, 103, 0)"]  # the lines' colours
    # Axis labels are plain numbers; latency in ms.
    assert page.evaluate("[120, 45.6, 4.56, 0.25, 0].map(sts.plain)") == [
        "120", "46", "4.6", "0.25", "0"
    ]  # fmt: skip
    assert page.evaluate("[0, 1, 2].map(n => sts.plural(n, 'request'))") == [
        "0 requests", "1 request", "2 requests"
    ]  # fmt: skip
    assert (
        "latency, ms"
        in page.locator(".chart-block[data-model='iris'] figcaption").nth(1).inner_text()
    )


def test_an_unknown_model_gets_a_page_not_json(server: LiveServer, browser: Browser) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    problems = watch(page, 404)  # the page itself answers 404 (Chromium logs that)
    answer = page.goto(server.url + "/dashboard/models/nope<b>")
    assert answer is not None
    assert answer.status == 404
    assert answer.headers["content-type"].startswith("text/html")
    assert page.locator("h1").inner_text() == "No model nope<b>"  # escaped, not markup
    served = page.locator("#served-models a").all_inner_texts()
    assert {"default", "digits", "iris", "text"} <= set(served)
    shot(page, "unknown-model")
    page.click("#served-models a:text-is('iris')")
    page.wait_for_url("**/dashboard/models/iris")
    assert page.locator("h1").inner_text().startswith("iris")
    page.go_back()
    page.click("#back")
    page.wait_for_selector("section.model[data-model='iris']")
    context.close()
    assert not problems, problems
