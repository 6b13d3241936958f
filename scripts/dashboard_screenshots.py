"""Screenshots of every dashboard page for docs/dashboard.md, taken in headless Chromium.

    .venv/bin/python scripts/dashboard_screenshots.py quickstart/.tuneloop docs/images/dashboard

It serves the workspace (`tuneloop.ui.app.create_app`) on a free loopback port, opens each page
(the newest run, a compare of its zero-shot and tuned rungs, the lineage, its data, and a
playground answer) and writes one PNG per page. Needs Chromium (Debian: apt-get install
chromium) and Playwright (`pip install 'tuneloop[dev]'`).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from tuneloop.serve.server import BackgroundServer
from tuneloop.ui.app import create_app
from tuneloop.ui.store import Workspace


def main(workspace: Path, out: Path, prompt: str = "My parcel never arrived, where is it?") -> None:
    from playwright.sync_api import sync_playwright

    runs = Workspace(workspace).run_ids()
    if not runs:
        sys.exit(f"no runs in {workspace}")
    run = runs[-1]
    pages = {
        "runs": "/",
        "run": f"/runs/{run}",
        "compare": f"/compare?a={run}:zero-shot&b={run}:tuned",
        "lineage": "/lineage",
        "data": f"/data/{run}",
        "playground": "/playground",
    }
    out.mkdir(parents=True, exist_ok=True)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    with BackgroundServer(create_app(workspace)) as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        for name, path in pages.items():
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(server.url + path)
            page.wait_for_selector("body[data-charts]", timeout=60_000)
            if name == "playground":
                page.fill("textarea[name=prompt]", prompt)
                page.click("#send")
                page.wait_for_selector("body[data-playground=done]", timeout=300_000)
            page.screenshot(path=str(out / f"{name}.png"), full_page=name != "run")
            print(f"wrote {out / f'{name}.png'}")
            page.close()
        browser.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2] if len(sys.argv) > 2 else "docs/images/dashboard"))
