"""Questions asked of the registry: what changed between two runs, and what a run is made of."""

from __future__ import annotations

from tuneloop.registry.store import Registry


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"train": {"lr": 1}} -> {"train.lr": 1}"""
    out: dict = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def recipe_diff(a: dict, b: dict) -> list[tuple[str, object, object]]:
    """(field, value in a, value in b) for every recipe field that differs."""
    fa, fb = flatten(a), flatten(b)
    return [
        (k, fa.get(k), fb.get(k)) for k in sorted(fa.keys() | fb.keys()) if fa.get(k) != fb.get(k)
    ]


def dataset_diff(a: list[list[str]], b: list[list[str]]) -> dict:
    """Examples added, removed and edited from dataset a to dataset b.

    Each example is [prompt hash, content hash]: the same prompt with another answer is an
    edit; a prompt only in b is an addition; only in a, a removal.

    >>> dataset_diff([["p1", "c1"], ["p2", "c2"]], [["p1", "c1x"], ["p3", "c3"]])
    {'added': 1, 'removed': 1, 'edited': 1, 'unchanged': 0}
    """
    by_prompt_a = {p: c for p, c in a}
    by_prompt_b = {p: c for p, c in b}
    common = by_prompt_a.keys() & by_prompt_b.keys()
    edited = sum(1 for p in common if by_prompt_a[p] != by_prompt_b[p])
    return {
        "added": len(by_prompt_b.keys() - by_prompt_a.keys()),
        "removed": len(by_prompt_a.keys() - by_prompt_b.keys()),
        "edited": edited,
        "unchanged": len(common) - edited,
    }


def latest_metrics(reg: Registry, run_id: str) -> dict[str, dict]:
    """The latest evaluation of each (suite, rung) of a run: {"heldout/tuned": metrics}."""
    out: dict[str, dict] = {}
    for ev in reg.evals(run_id):
        out[f"{ev['suite']}/{ev['rung']}"] = ev["metrics"]
    return out


def metric_diff(ma: dict[str, dict], mb: dict[str, dict]) -> list[tuple[str, float, float]]:
    """(suite/rung.metric, a, b) for every numeric metric both runs have."""
    rows = []
    for key in sorted(ma.keys() & mb.keys()):
        for metric, va in ma[key].items():
            vb = mb[key].get(metric)
            numeric = isinstance(va, int | float) and isinstance(vb, int | float)
            if numeric and not isinstance(va, bool) and metric not in ("n", "seconds"):
                rows.append((f"{key}.{metric}", float(va), float(vb)))
    return rows


def run_diff(reg: Registry, a: str, b: str) -> dict:
    ra, rb = reg.run(a), reg.run(b)
    data = None
    if ra["train_dataset_id"] and rb["train_dataset_id"]:
        da, db = reg.dataset(ra["train_dataset_id"]), reg.dataset(rb["train_dataset_id"])
        data = dataset_diff(da["hashes"] or [], db["hashes"] or [])
    return {
        "recipe": recipe_diff(ra["recipe"], rb["recipe"]),
        "metrics": metric_diff(latest_metrics(reg, a), latest_metrics(reg, b)),
        "data": data,
    }


def measured_throughput(reg: Registry, model_name: str, method: str | None = None) -> dict | None:
    """The tokens/s the latest finished run of `model_name` (with `method`, when given) measured
    while training, with where it was measured: {"tokens_per_s", "run", "method", "device",
    "updated"}; None when no such run is registered."""
    for r in reversed(reg.runs()):
        summary = r["summary"] or {}
        run_method = (r["recipe"].get("train") or {}).get("method")
        same = r["model_name"] == model_name and (not method or run_method in (None, method))
        if r["status"] != "finished" or not same or not summary.get("tokens_per_s"):
            continue
        return {
            "tokens_per_s": float(summary["tokens_per_s"]),
            "run": r["id"],
            "method": run_method,
            "device": summary.get("device") or (r["hardware"] or {}).get("device"),
            "updated": r["updated"],
        }
    return None
