"""`tuneloop ui`: a local, read-only web dashboard over a workspace (registry + run folders).

One module per concern: `store` (every file the pages read, kept inside the workspace), `layout`
(the page shell and charts), one module per page (`runs`, `run_page`, `compare`, `lineage`,
`data`, `playground`), `live` (training progress as server-sent events) and `app` (the routes).
The figures are those of the static report (`tuneloop.report.figures`), drawn by plotly.js.
"""
