"""Paired comparison of two evaluations of the same items: `tuneloop compare A B`.

An evaluation is a per-item results file (`eval/<rung>.jsonl`). A and B are paired item by item
(on the item's source and prompt, or probe id), so the comparison is of the same questions; the
items only one of them holds are left out, and counted (`only_in_a`, `only_in_b`):

    metric       A (zero-shot)  B (tuned)  B - A    95% CI            McNemar p
    exact_match  12.5%          90.6%      +78.1%   [+67.2%, +87.5%]  1.2e-14
"""

from __future__ import annotations

from pathlib import Path

from tuneloop.errors import UserError
from tuneloop.evaluate.stats import is_binary, mcnemar_exact, paired_bootstrap
from tuneloop.workspace import find_run


def resolve_items(spec: str, workspace: Path) -> tuple[str, Path]:
    """A results file from `RUN` (its tuned rung), `RUN:RUNG`, or a path to a .jsonl file.

    RUNG may name a subfolder: `RUN:probes/tuned-safety`, `RUN:train/tuned`.
    """
    path = Path(spec)
    if path.suffix == ".jsonl" and path.is_file():
        return str(path), path
    run_ref, _, rung = spec.partition(":")
    run = find_run(run_ref, workspace)
    rung = rung or "tuned"
    target = run.eval_dir / f"{rung}.jsonl"
    if not target.is_file():
        have = sorted(
            str(p.relative_to(run.eval_dir).with_suffix("")) for p in run.eval_dir.rglob("*.jsonl")
        )
        raise UserError(
            f"run {run.id} has no evaluation `{rung}`",
            spec,
            f"evaluate it first (tuneloop eval {run.id} --rung {rung}); it has: "
            f"{', '.join(have) or 'none'}",
        )
    return f"{run.id}:{rung}", target


def item_key(item: dict) -> tuple:
    return (item["id"],) if "id" in item else (item.get("source"), item.get("prompt"))


def paired_scores(a: list[dict], b: list[dict], metric: str) -> tuple[list[float], list[float]]:
    """The metric's scores of the items both evaluations hold, in A's order."""
    b_by_key = {item_key(i): i for i in b}
    shared = [i for i in a if item_key(i) in b_by_key]
    if not shared:
        raise UserError(
            "the two evaluations share no items, so they cannot be paired",
            fix="compare evaluations of the same held-out split (the same run, or runs that "
            "share data.heldout)",
        )
    for item in (shared[0], b_by_key[item_key(shared[0])]):
        if metric not in item["scores"]:
            raise UserError(
                f"metric `{metric}` is not among the per-item scores",
                "--metric",
                f"choose one of: {', '.join(item['scores'])}",
            )
    xa = [i["scores"][metric] for i in shared]
    xb = [b_by_key[item_key(i)]["scores"][metric] for i in shared]
    return xa, xb


def compare_items(
    a: list[dict],
    b: list[dict],
    metric: str,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict:
    """Paired bootstrap of mean(B) - mean(A) and, for 0/1 scores, the exact McNemar test, on
    the items both hold; `only_in_a` and `only_in_b` count the items left out."""
    xa, xb = paired_scores(a, b, metric)
    keys_a, keys_b = {item_key(i) for i in a}, {item_key(i) for i in b}
    out = {
        "metric": metric,
        "n_a": len(a),
        "n_b": len(b),
        "only_in_a": len(keys_a - keys_b),
        "only_in_b": len(keys_b - keys_a),
        "paired": paired_bootstrap(xa, xb, confidence, n_boot, seed).to_dict(),
    }
    if is_binary(xa) and is_binary(xb):
        out["mcnemar"] = mcnemar_exact(xa, xb).to_dict()
    return out


def format_comparison(result: dict, name_a: str, name_b: str) -> str:
    p = result["paired"]
    level = f"{p['confidence']:.0%} CI"
    head = ("metric", f"A ({name_a})", f"B ({name_b})", "B - A", level, "McNemar p", "items")
    mc = result.get("mcnemar")
    row = (
        result["metric"],
        f"{p['mean_a']:.1%}",
        f"{p['mean_b']:.1%}",
        f"{p['diff']:+.1%}",
        f"[{p['low']:+.1%}, {p['high']:+.1%}]",
        f"{mc['p_value']:.2g}" if mc else "-",
        str(p["n"]),
    )
    widths = [max(len(a), len(b)) for a, b in zip(head, row, strict=True)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in (head, row)]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if mc:
        lines.append(
            f"discordant items: A right and B wrong {mc['a_only']}, "
            f"B right and A wrong {mc['b_only']}"
        )
    only_a, only_b = result.get("only_in_a", 0), result.get("only_in_b", 0)
    if only_a or only_b:
        lines.append(
            f"paired on {p['n']} shared items; left out: {only_a} of A's {result['n_a']} items "
            f"are not in B, {only_b} of B's {result['n_b']} items are not in A"
        )
    return "\n".join(lines)
