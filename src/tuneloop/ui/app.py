"""The dashboard's routes. Every page is rendered on the server from the workspace (read-only);
every failure is a page with a status and a sentence (`store.PageError`), never a traceback.

    app = create_app(Path(".tuneloop"))     # then: uvicorn on 127.0.0.1 (`tuneloop ui`)
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tuneloop.ui import compare, data, lineage, live, playground, run_page, runs
from tuneloop.ui.layout import error_page
from tuneloop.ui.store import PageError, Workspace

log = logging.getLogger("tuneloop.ui")
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def plotly_js() -> Path:
    """plotly.js as the `plotly` wheel ships it: nothing is fetched from the network."""
    return Path(str(resources.files("plotly") / "package_data" / "plotly.min.js"))


def create_app(workspace: Path) -> FastAPI:
    ws = Workspace(workspace)
    engines = playground.Engines(ws)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        engines.close()

    app = FastAPI(
        title="tuneloop ui", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan
    )
    app.state.workspace = ws

    @app.exception_handler(PageError)
    async def page_error(request: Request, err: PageError) -> HTMLResponse:
        return HTMLResponse(error_page(err.status, err.title, err.message, err.fix), err.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> HTMLResponse:
        title = "not found" if err.status_code == 404 else "request refused"
        return HTMLResponse(error_page(err.status_code, title, str(err.detail)), err.status_code)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, err: Exception) -> HTMLResponse:
        # the traceback goes to the server's log, the page says what failed in one sentence
        log.exception("dashboard page %s failed", request.url.path)
        message = f"{type(err).__name__}: {err}"
        return HTMLResponse(
            error_page(
                500,
                "this page failed",
                message,
                "the server's log has the details; please report it",
            ),
            500,
        )

    @app.get("/", response_class=HTMLResponse)
    def runs_index() -> str:
        return runs.runs_page(ws)

    @app.get("/runs/{run_id}", response_class=HTMLResponse)
    def run_view(run_id: str) -> str:
        return run_page.run_page(ws, run_id)

    @app.get("/runs/{run_id}/report.html")
    def static_report(run_id: str) -> FileResponse:
        path = ws.inside(ws.run(run_id).path / "report.html")
        if not path.is_file():
            raise PageError(
                404, "no report", f"run {run_id} has no report.html", f"tuneloop report {run_id}"
            )
        return FileResponse(path, media_type="text/html")

    @app.get("/compare", response_class=HTMLResponse)
    def compare_view(
        a: str | None = None,
        b: str | None = None,
        metric: str | None = None,
        slice: str | None = None,
    ) -> str:  # noqa: A002 - the query's name
        return compare.compare_page(ws, a, b, metric or None, slice or None)

    @app.get("/lineage", response_class=HTMLResponse)
    def lineage_view(run: str | None = None) -> str:
        return lineage.lineage_page(ws, run or None)

    @app.get("/data/{run_id}", response_class=HTMLResponse)
    def data_view(run_id: str) -> str:
        return data.data_page(ws, run_id)

    @app.get("/playground", response_class=HTMLResponse)
    def playground_view() -> str:
        return playground.playground_page(ws)

    @app.get("/events/progress")
    async def progress(
        request: Request, run: str | None = None, limit: int | None = Query(None, ge=1)
    ) -> StreamingResponse:
        if run:
            ws.run(run)  # 404 before the stream starts
        stream = live.progress_events(ws, request, run, limit)
        return StreamingResponse(stream, media_type="text/event-stream", headers=SSE_HEADERS)

    @app.get("/events/playground")
    async def playground_answers(request: Request, prompt: str = "",
                                 run: list[str] = Query(default=[]),
                                 max_tokens: int = Query(48, ge=1, le=playground.MAX_TOKENS),
                                 ) -> StreamingResponse:  # fmt: skip
        stream = playground.answer_events(engines, run, prompt, max_tokens, request)
        return StreamingResponse(stream, media_type="text/event-stream", headers=SSE_HEADERS)

    static = resources.files("tuneloop.ui") / "static"

    @app.get("/favicon.ico")
    def favicon() -> Response:
        return Response(status_code=204)  # none: a browser's request for one is not an error

    @app.get("/static/plotly.min.js")
    def plotly() -> FileResponse:
        return FileResponse(
            plotly_js(), media_type="text/javascript", headers={"Cache-Control": "max-age=86400"}
        )

    @app.get("/static/dashboard.js")
    def script() -> Response:
        return Response(
            (static / "dashboard.js").read_text(encoding="utf-8"), media_type="text/javascript"
        )

    return app
