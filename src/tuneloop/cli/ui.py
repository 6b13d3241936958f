"""`tuneloop ui`: the local web dashboard over a workspace (runs, live training, compare,
lineage, data, playground)."""

from __future__ import annotations

from pathlib import Path

import typer

from tuneloop.cli.common import WORKSPACE, quiet_libraries, user_errors

app = typer.Typer()


@app.command()
@user_errors
def ui(
    workspace: Path = WORKSPACE,
    port: int = typer.Option(8765, help="Port to listen on."),
    host: str = typer.Option(
        "127.0.0.1",
        help="Address to listen on. The dashboard has no login: keep it on the loopback "
        "address unless the network is yours alone.",
    ),
) -> None:
    """A local web dashboard of the workspace: runs, live loss, compare, lineage, playground."""
    quiet_libraries()
    from tuneloop.errors import UserError

    try:
        from tuneloop.ui.app import create_app, plotly_js
    except ImportError as err:
        raise UserError(
            f"the dashboard needs a package that is not installed ({err.name})",
            fix="pip install 'tuneloop[ui]'",
        ) from None
    if not plotly_js().is_file():
        raise UserError("plotly's plotly.min.js is missing", fix="pip install 'tuneloop[ui]'")
    if not workspace.is_dir():
        raise UserError(
            f"no workspace at {workspace}",
            "--workspace",
            "pass the folder holding registry.db and runs/ (default .tuneloop)",
        )
    from tuneloop.serve.server import serve_forever

    typer.echo(f"tuneloop dashboard of {workspace.resolve()} on http://{host}:{port}/")
    serve_forever(create_app(workspace), host, port)
