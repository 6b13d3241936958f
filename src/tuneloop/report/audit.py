"""The report's data audit: what training wrote into `<run>/data/audit.json`
(`data.stats.data_audit`): split sizes, lint counts and the first findings, label balance,
token lengths of the train items as trained, and what the max_length policy did."""

from __future__ import annotations

from tuneloop.report import render

LABELS_SHOWN = 40


def audit_section(audit: dict) -> str:
    split, lint = audit.get("split") or {}, audit.get("lint") or {}
    labels = (audit.get("labels") or {}).get("train") or {}
    held_labels = (audit.get("labels") or {}).get("heldout") or {}
    codes = ", ".join(f"{code} {n}" for code, n in (lint.get("codes") or {}).items())
    origin = "split off train by the run" if split.get("split_made") else "the recipe's files"
    rows = [
        ["split", f"{split.get('train', '-')} train, {split.get('heldout', '-')} held-out "
                  f"({origin})"],
        ["lint", f"{lint.get('error', 0)} error(s), {lint.get('warning', 0)} warning(s)"
                 + (f": {codes}" if codes else "")],
        ["labels", _balance(labels)],
    ]  # fmt: skip
    tokens = audit.get("tokens") or {}
    if tokens.get("train"):
        t = tokens["train"]
        rows.append([
            "tokens per example (train, as trained)",
            f"min {t['min']}, mean {t['mean']}, median {t['median']:g}, p90 {t['p90']:g}, "
            f"p99 {t['p99']:g}, max {t['max']}; answer tokens {tokens.get('answer_mean', '-')} "
            "on average",
        ])  # fmt: skip
    trunc = audit.get("truncation") or {}
    if trunc:
        rows.append([
            "truncation",
            f"policy {trunc.get('policy', '-')} at max_length {trunc.get('max_length', '-')}: "
            f"{trunc.get('dropped', 0)} dropped ({trunc.get('lost_target', 0)} of them lost "
            f"their whole answer), {trunc.get('truncated', 0)} truncated",
        ])  # fmt: skip
    out = "<h3>Data audit</h3>" + render.table(rows, ["", ""])
    if labels and len(labels) <= LABELS_SHOWN:
        ordered = sorted(labels.items(), key=lambda kv: -kv[1])
        out += render.table(
            [[label, n, held_labels.get(label, 0)] for label, n in ordered],
            ["label", "train", "held-out"],
        )
    findings = audit.get("findings") or []
    if findings:
        total = lint.get("error", 0) + lint.get("warning", 0)
        out += f"<p>The first {len(findings)} of {total} lint findings:</p>" + render.table(
            [[f["severity"], f["code"], f["where"], f["message"]] for f in findings],
            ["severity", "code", "where", "message"],
        )
    return out


def _balance(labels: dict[str, int]) -> str:
    """`3 in train (largest 'alpha' 8, smallest 'gamma' 7)`, or why there is none."""
    if not labels:
        return "none (the examples carry no label)"
    (top, most), (bottom, least) = (
        max(labels.items(), key=lambda kv: kv[1]),
        min(labels.items(), key=lambda kv: kv[1]),
    )
    return f"{len(labels)} in train (largest {top!r} {most}, smallest {bottom!r} {least})"
