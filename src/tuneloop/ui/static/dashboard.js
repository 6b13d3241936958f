// The dashboard's one script: draws the charts the server described (plotly.js, served from
// the plotly wheel), sorts and filters tables, and follows server-sent events (training
// progress, playground answers). Automated checks read what it did from data-* attributes on
// <body>: data-charts="drawn/total", data-live-events="n".
"use strict";

function drawCharts() {
  const charts = [...document.querySelectorAll(".chart[data-figure]")];
  let drawn = 0;
  for (const div of charts) {
    try {
      const fig = JSON.parse(div.dataset.figure);
      Plotly.newPlot(div, fig.data, fig.layout, { responsive: true, displaylogo: false });
      drawn += 1;
    } catch (err) {
      console.error("chart failed:", div.getAttribute("aria-label"), err);
    }
  }
  document.body.dataset.charts = `${drawn}/${charts.length}`;
}

function cellValue(row, col) {
  const cell = row.children[col];
  if (!cell) return "";
  const marked = cell.querySelector("[data-sort]");
  const text = marked ? marked.dataset.sort : cell.textContent.trim();
  const number = parseFloat(text.replace(/,/g, ""));
  return isNaN(number) || !/^[-+\d.,]/.test(text) ? text.toLowerCase() : number;
}

function sortable() {
  for (const th of document.querySelectorAll("th.sortable")) {
    th.addEventListener("click", () => {
      const table = th.closest("table");
      const body = table.tBodies[0];
      const col = Number(th.dataset.col);
      const up = th.dataset.order !== "asc";
      th.dataset.order = up ? "asc" : "desc";
      const rows = [...body.rows].sort((a, b) => {
        const x = cellValue(a, col), y = cellValue(b, col);
        return (x < y ? -1 : x > y ? 1 : 0) * (up ? 1 : -1);
      });
      rows.forEach((r) => body.appendChild(r));
    });
  }
}

function filters() {
  const text = document.getElementById("filter");
  const status = document.getElementById("status-filter");
  const table = document.getElementById("runs");
  if (!table || !text) return;
  const apply = () => {
    const want = text.value.toLowerCase();
    for (const row of table.tBodies[0].rows) {
      const okText = !want || row.textContent.toLowerCase().includes(want);
      const okStatus = !status.value || (row.dataset.status || "").startsWith(status.value);
      row.hidden = !(okText && okStatus);
    }
  };
  text.addEventListener("input", apply);
  status.addEventListener("change", apply);
}

const FORMAT = {
  loss: (v) => v.toFixed(4),
  lr: (v) => v.toExponential(2),
  tokens_per_s: (v) => Math.round(v).toLocaleString("en-US"),
  eta_s: (v) => `${Math.floor(v / 60)}:${String(Math.round(v % 60)).padStart(2, "0")}`,
  step: (v, e) => (e.total_steps ? `${v} / ${e.total_steps}` : String(v)),
  status: (v) => v,
};

function showProgress(scope, event) {
  for (const [key, format] of Object.entries(FORMAT)) {
    const el = scope.querySelector(`[data-field="${key}"]`);
    if (el && event[key] !== undefined && event[key] !== null) el.textContent = format(event[key], event);
  }
}

function follow() {
  for (const source of document.querySelectorAll("[data-live]")) {
    const events = new EventSource(source.dataset.live);
    let count = 0;
    events.addEventListener("progress", (message) => {
      const event = JSON.parse(message.data);
      count += 1;
      document.body.dataset.liveEvents = String(count);
      if (source.id === "runs") {
        const row = source.querySelector(`tr[data-run="${CSS.escape(event.run)}"]`);
        if (row) {
          showProgress(row, event);
          if (event.status) row.dataset.status = event.status;
          row.classList.toggle("live", event.status === "training" || event.status === "created");
        }
      } else {
        showProgress(document, event);
        const chart = document.querySelector('.chart[aria-label="loss curves"]');
        if (chart && event.points && event.points.length && chart.data) {
          Plotly.extendTraces(chart, { x: [event.points.map((p) => p[0])],
                                       y: [event.points.map((p) => p[1])] }, [0]);
          chart.dataset.points = String(chart.data[0].x.length);
        }
      }
    });
  }
}

function playground() {
  const form = document.getElementById("playground");
  if (!form) return;
  const answers = document.getElementById("answers");
  const status = document.getElementById("playground-status");
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const data = new FormData(form);
    const params = new URLSearchParams();
    params.set("prompt", data.get("prompt"));
    params.set("max_tokens", data.get("max_tokens"));
    for (const run of data.getAll("run")) params.append("run", run);
    answers.innerHTML = "";
    document.body.dataset.playground = "running";
    const boxes = {};
    const box = (model) => {
      if (!boxes[model]) {
        const section = document.createElement("section");
        section.dataset.model = model;
        const title = document.createElement("h3");
        title.textContent = model === "__base__" ? "base model" : model;
        const text = document.createElement("div");
        text.className = "answer";
        section.append(title, text);
        answers.append(section);
        boxes[model] = text;
      }
      return boxes[model];
    };
    box("__base__");
    for (const run of data.getAll("run")) box(run);
    const events = new EventSource(`/events/playground?${params}`);
    events.addEventListener("status", (m) => { status.textContent = JSON.parse(m.data).message; });
    events.addEventListener("delta", (m) => {
      const d = JSON.parse(m.data);
      box(d.model).textContent += d.text;
      box(d.model).closest("section").dataset.deltas =
        String(Number(box(d.model).closest("section").dataset.deltas || 0) + 1);
    });
    events.addEventListener("done", (m) => {
      const d = JSON.parse(m.data);
      box(d.model).textContent = d.text;
      const section = box(d.model).closest("section");
      section.dataset.done = "true";
      const note = document.createElement("p");
      note.className = "muted";
      note.textContent = `${d.completion_tokens} tokens, ${d.finish_reason}`;
      section.append(note);
    });
    events.addEventListener("failed", (m) => {
      const d = JSON.parse(m.data);
      status.textContent = `failed: ${d.message}`;
      document.body.dataset.playground = "failed";
      events.close();
    });
    events.addEventListener("end", () => {
      status.textContent = "done";
      document.body.dataset.playground = "done";
      events.close();
    });
  });
}

window.addEventListener("DOMContentLoaded", () => {
  drawCharts();
  sortable();
  filters();
  follow();
  playground();
});
