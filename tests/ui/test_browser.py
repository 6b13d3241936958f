"""The dashboard in a real headless Chromium (Debian's package, driven by Playwright through
its executable path): every page draws its charts with data and logs no error, a compare runs,
a playground answer streams, and a training run's loss updates without a reload."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from dashboard_workspace import workspace  # noqa: F401 - the session fixture

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None and os.environ.get("CI"):
    raise RuntimeError("CI must run the browser tests: scripts/setup.sh installs chromium")
pytestmark = [
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="Chromium is not installed (Debian: apt-get "
        "install chromium); the browser tests need it",
    ),
    pytest.mark.usefixtures("one_thread"),
]


@pytest.fixture(scope="module")
def browser():
    """One browser context for the module: plotly.min.js is fetched once, then cached."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        args = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
        browser = p.chromium.launch(executable_path=CHROMIUM, args=args)
        context = browser.new_context(viewport={"width": 1200, "height": 900})
        yield context
        context.close()
        browser.close()


@pytest.fixture()
def server(workspace):  # noqa: F811
    from tuneloop.serve.server import BackgroundServer
    from tuneloop.ui.app import create_app

    ws, first, second = workspace
    with BackgroundServer(create_app(ws)) as running:
        yield running.url, first, second


def open_page(browser, url: str):
    """A page with every console error and uncaught exception collected in `page.errors`."""
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.errors = errors
    page.goto(url)
    page.wait_for_selector("body[data-charts]", timeout=30_000)
    return page


def charts_drawn(page) -> int:
    drawn, total = map(int, page.get_attribute("body", "data-charts").split("/"))
    assert drawn == total, f"{drawn} of {total} charts drawn"
    for chart in page.query_selector_all(".chart"):
        assert int(chart.get_attribute("data-points")) > 0, chart.get_attribute("aria-label")
        assert chart.query_selector(".main-svg") is not None  # plotly drew it
    return total


def test_every_page_draws_its_charts_without_errors(browser, server):
    url, first, second = server
    pages = {
        "/": 0,
        f"/runs/{first.id}": 3,
        f"/runs/{second.id}": 2,
        "/lineage": 0,
        f"/data/{first.id}": 4,
        "/playground": 0,
    }
    for path, at_least in pages.items():
        page = open_page(browser, url + path)
        assert charts_drawn(page) >= at_least, path
        assert page.errors == [], (path, page.errors)
        page.close()
    page = open_page(browser, url + "/lineage")
    page.click(f'svg a[href="/runs/{second.id}"]')
    page.wait_for_url(f"**/runs/{second.id}")
    page.close()


def test_a_compare_runs_in_the_browser(browser, server):
    url, first, second = server
    page = open_page(browser, url + "/compare")
    page.select_option("select[name=a]", f"{first.id}:zero-shot")
    page.select_option("select[name=b]", f"{first.id}:tuned")
    page.click("#compare-go")
    page.wait_for_selector("#paired")
    assert page.inner_text('#paired [data-field="mcnemar"]').strip() != ""
    assert charts_drawn(page) == 1
    page.select_option("select[name=slice]", index=1)  # the first topic
    page.click("#compare-go")
    page.wait_for_selector("#paired")
    assert "slice=topic" in page.url
    assert page.errors == []


def test_a_playground_answer_streams(browser, server):
    url, first, second = server
    page = open_page(browser, url + "/playground")
    page.check(f'input[value="{first.id}"]')
    page.check(f'input[value="{second.id}"]')
    page.fill("textarea[name=prompt]", "item 3 about gamma things")
    page.fill("input[name=max_tokens]", "8")
    page.click("#send")
    page.wait_for_selector("body[data-playground=done]", timeout=60_000)
    sections = page.query_selector_all("#answers section")
    assert {s.get_attribute("data-model") for s in sections} == {"__base__", first.id, second.id}
    for s in sections:
        assert s.get_attribute("data-done") == "true"
        assert int(s.get_attribute("data-deltas") or 0) >= 1  # streamed, not all at once
    assert page.errors == []


def test_a_training_run_updates_its_loss_without_a_reload(browser, server, workspace):  # noqa: F811
    url, _, _ = server
    ws = workspace[0]
    run = ws / "runs" / "29991231-235959-training"
    run.mkdir()
    try:
        (run / "run.json").write_text(
            json.dumps(
                {"status": "training", "total_steps": 50, "method": "lora", "objective": "sft"}
            )
        )
        log = run / "metrics.jsonl"

        def append(step: int, loss: float) -> None:
            with log.open("a") as f:
                f.write(
                    json.dumps(
                        {
                            "step": step,
                            "loss": loss,
                            "lr": 1e-3,
                            "tokens": 640 * step,
                            "tokens_per_s": 320.0,
                        }
                    )
                    + "\n"
                )

        append(1, 2.5)
        runs = open_page(browser, url + "/")
        row = f'tr[data-run="{run.name}"]'
        assert runs.inner_text(f'{row} [data-field="loss"]') == "2.5000"
        one = open_page(browser, url + f"/runs/{run.name}")
        append(2, 1.25)
        runs.wait_for_function(
            f"document.querySelector('{row} [data-field=\"loss\"]').textContent === '1.2500'",
            timeout=20_000,
        )
        assert runs.inner_text(f'{row} [data-field="step"]') == "2 / 50"
        assert runs.inner_text(f'{row} [data-field="eta_s"]') == "1:36"  # 48 steps x 2 s
        one.wait_for_function(
            "document.querySelector('.chart[aria-label=\"loss curves\"]').dataset.points === '2'",
            timeout=20_000,
        )
        assert runs.evaluate("performance.getEntriesByType('navigation').length") == 1
        assert runs.errors == [] and one.errors == []
    finally:
        shutil.rmtree(run)
