"""Compare what users really send (the sampled request log) with what the model was trained on,
and flag drift with the numbers, so the next dataset follows the traffic.

Each signal is a two-sample statistic of training data against live requests:

- prompt length (words in the last user message): Kolmogorov-Smirnov distance D, with its p-value;
- vocabulary (lower-cased words of the prompts): Jensen-Shannon distance of the word
  distributions, and the share of live words never seen in training (out-of-vocabulary rate);
- answers: for label-like tasks, the Jensen-Shannon distance of the label distributions (with a
  chi-square p-value) and the share of live answers that are no training label; for free text,
  the KS distance of answer lengths.

Small samples make every distance look large, so each statistic gets a no-drift baseline: the
same statistic between the training data and random samples of it as large as the live sample
(`draws` of them). A signal is flagged when it passes its threshold, exceeds the baseline's mean
by more than three standard deviations and, where a test applies, has p < 0.01. Fewer than
`min_samples` live requests are reported but never flagged.

    report = compare(train_prompts, train_answers, live_prompts, live_answers, model="support")
    print(format_report(report))
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

WORD = re.compile(r"\w+", re.UNICODE)
THRESHOLDS = {
    "length_ks": 0.2,
    "vocab_js": 0.3,
    "oov_rate": 0.1,
    "answer_js": 0.2,
    "answer_out_of_set": 0.05,
    "p_value": 0.01,
}
OUTSIDE = "<not a training label>"


@dataclass
class Signal:
    name: str
    statistic: str
    value: float
    threshold: float
    baseline: float  # mean of the statistic on resampled training data (no drift)
    spread: float  # its standard deviation
    drifted: bool
    details: dict = field(default_factory=dict)


@dataclass
class MonitorReport:
    n_train: int
    n_live: int
    model: str | None
    signals: list[Signal]
    enough: bool

    @property
    def drifted(self) -> bool:
        return any(s.drifted for s in self.signals)

    def to_dict(self) -> dict:
        return {**asdict(self), "drifted": self.drifted}


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def ks(a: list[float], b: list[float]) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov: (D, p)."""
    from scipy.stats import ks_2samp

    if not a or not b:
        return 0.0, 1.0
    result = ks_2samp(a, b)
    return float(result.statistic), float(result.pvalue)


def js_distance(a: Counter, b: Counter) -> float:
    """Jensen-Shannon distance (base 2, within [0, 1]) of two count distributions."""
    from scipy.spatial.distance import jensenshannon

    keys = sorted(set(a) | set(b))
    p = np.array([a.get(k, 0) for k in keys], dtype=float)
    q = np.array([b.get(k, 0) for k in keys], dtype=float)
    if p.sum() == 0 or q.sum() == 0:
        return 0.0
    return float(jensenshannon(p / p.sum(), q / q.sum(), base=2))


# Each statistic compares reference items with live items; an item is (prompt, answer).
Items = list[tuple[str, str]]


def _lengths(items: Items, side: int) -> list[int]:
    """Word counts of the prompts (side 0) or of the answers (side 1)."""
    return [len(words(item[side])) for item in items]


def _length_ks(ref: Items, live: Items) -> float:
    return ks(_lengths(ref, 0), _lengths(live, 0))[0]


def _vocab_js(ref: Items, live: Items) -> float:
    return js_distance(
        Counter(w for p, _ in ref for w in words(p)), Counter(w for p, _ in live for w in words(p))
    )


def _oov_rate(ref: Items, live: Items) -> float:
    seen = {w for p, _ in ref for w in words(p)}
    live_words = [w for p, _ in live for w in words(p)]
    return sum(w not in seen for w in live_words) / max(1, len(live_words))


def _answer_js(ref: Items, live: Items) -> float:
    labels = Counter(a for _, a in ref)
    return js_distance(labels, Counter(a if a in labels else OUTSIDE for _, a in live))


def _out_of_set(ref: Items, live: Items) -> float:
    labels = {a for _, a in ref}
    return sum(a not in labels for _, a in live) / max(1, len(live))


def _answer_length_ks(ref: Items, live: Items) -> float:
    return ks(_lengths(ref, 1), _lengths(live, 1))[0]


def null_distribution(
    stat: Callable[[Items, Items], float], train: Items, n: int, draws: int = 20, seed: int = 0
) -> tuple[float, float]:
    """Mean and standard deviation of `stat` between the training data and random samples of
    `n` training items (the rest of the training data as reference): what no drift looks like."""
    rng = random.Random(seed)
    n = max(1, min(n, len(train) // 2))
    values = []
    for _ in range(draws):
        order = rng.sample(range(len(train)), len(train))
        sample = [train[i] for i in order[:n]]
        rest = [train[i] for i in order[n:]]
        values.append(stat(rest, sample))
    return float(np.mean(values)), float(np.std(values))


def compare(
    train_prompts: list[str],
    train_answers: list[str],
    live_prompts: list[str],
    live_answers: list[str],
    model: str | None = None,
    min_samples: int = 20,
    thresholds: dict | None = None,
    draws: int = 20,
) -> MonitorReport:
    """Drift of live prompts and answers against the training data, with numbers."""
    t = {**THRESHOLDS, **(thresholds or {})}
    train = list(zip(train_prompts, train_answers, strict=True))
    live = list(zip(live_prompts, live_answers, strict=True))
    enough = len(live) >= min_samples
    labels = Counter(train_answers)
    label_like = bool(train) and len(labels) <= max(2, len(train) // 2)

    def signal(
        name: str, statistic: str, stat, threshold: float, p: float | None = None, **details
    ) -> Signal:
        value = stat(train, live)
        mean, std = null_distribution(stat, train, len(live), draws)
        drifted = (
            enough
            and value > threshold
            and value > mean + 3 * std + 1e-9
            and (p is None or p < t["p_value"])
        )
        if p is not None:
            details["p_value"] = p
        return Signal(name, statistic, value, threshold, mean, std, drifted, details)

    def length_signal(name: str, stat, side: int) -> Signal:
        """KS distance of the word counts of prompts (side 0) or answers (side 1)."""
        lengths = _lengths(train, side), _lengths(live, side)
        return signal(
            name,
            "KS distance",
            stat,
            t["length_ks"],
            ks(*lengths)[1],
            train=_summary(lengths[0]),
            live=_summary(lengths[1]),
        )

    seen = {w for p, _ in train for w in words(p)}
    unseen = Counter(w for p, _ in live for w in words(p) if w not in seen)
    signals = [
        length_signal("prompt length", _length_ks, 0),
        signal("vocabulary", "JS distance", _vocab_js, t["vocab_js"]),
        signal(
            "unseen words",
            "out-of-vocabulary rate",
            _oov_rate,
            t["oov_rate"],
            top_unseen=unseen.most_common(10),
        ),
    ]
    if label_like:
        observed = Counter(a if a in labels else OUTSIDE for _, a in live)
        shares = {
            k: {
                "train": labels.get(k, 0) / len(train),
                "live": observed.get(k, 0) / max(1, len(live)),
            }
            for k in sorted(set(labels) | set(observed))
        }
        signals.append(
            signal(
                "answers",
                "JS distance of labels",
                _answer_js,
                t["answer_js"],
                _chi2(labels, observed),
                shares=shares,
            )
        )
        signals.append(
            signal(
                "answers outside the label set",
                "share of live answers",
                _out_of_set,
                t["answer_out_of_set"],
                examples=[a for _, a in live if a not in labels][:10],
            )
        )
    else:
        signals.append(length_signal("answer length", _answer_length_ks, 1))
    return MonitorReport(len(train), len(live), model, signals, enough)


def _chi2(expected: Counter, observed: Counter) -> float:
    """p-value of a chi-square test that the live labels follow the training proportions."""
    from scipy.stats import chi2_contingency

    keys = sorted(set(expected) | set(observed))
    table = np.array([[expected.get(k, 0) for k in keys], [observed.get(k, 0) for k in keys]])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or table[1].sum() == 0:
        return 1.0
    return float(chi2_contingency(table)[1])


def _summary(xs: list[int]) -> dict:
    if not xs:
        return {"n": 0}
    a = np.array(xs, dtype=float)
    return {
        "n": len(xs),
        "mean": round(float(a.mean()), 2),
        "median": float(np.median(a)),
        "p95": float(np.percentile(a, 95)),
    }


def live_requests(records: list[dict], model: str | None) -> tuple[list[str], list[str], str]:
    """(prompts, answers, model) of the logged requests for one model."""
    from tuneloop.errors import UserError

    models = sorted({r.get("model", "") for r in records})
    if model is None:
        served = [m for m in models if m != "__base__"]
        if len(served) != 1:
            raise UserError(
                f"the log holds requests for {len(models)} models: {', '.join(models)}",
                "--model",
                "pass --model NAME to pick the adapter to compare",
            )
        model = served[0]
    chosen = [r for r in records if r.get("model") == model]
    prompts = []
    for r in chosen:
        if "messages" in r:
            users = [m["content"] for m in r["messages"] if m.get("role") == "user"]
            prompts.append(users[-1] if users else "")
        else:
            prompts.append(r.get("prompt", ""))
    return prompts, [r.get("answer", "") for r in chosen], model


def format_report(report: MonitorReport) -> str:
    rows = [("signal", "statistic", "live", "no-drift baseline", "threshold", "drift")]
    for s in report.signals:
        base = f"{s.baseline:.3f} ± {s.spread:.3f}"
        rows.append(
            (
                s.name,
                s.statistic,
                f"{s.value:.3f}",
                base,
                f"{s.threshold:g}",
                "DRIFT" if s.drifted else "no",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    head = (
        f"{report.n_live} live requests for `{report.model}` against {report.n_train} "
        "training examples (baseline: training resampled to the live sample size)"
    )
    notes = []
    for s in report.signals:
        if "train" in s.details and "live" in s.details:
            notes.append(f"{s.name}: train {s.details['train']}, live {s.details['live']}")
        if s.details.get("top_unseen") and s.drifted:
            unseen = ", ".join(f"{w} ({c})" for w, c in s.details["top_unseen"])
            notes.append(f"most frequent unseen words: {unseen}")
        if s.details.get("shares") and s.drifted:
            moved = sorted(
                s.details["shares"].items(), key=lambda kv: -abs(kv[1]["live"] - kv[1]["train"])
            )[:5]
            notes.append(
                "labels that moved most: "
                + ", ".join(f"{k} {v['train']:.0%}->{v['live']:.0%}" for k, v in moved)
            )
    if not report.enough:
        notes.append(f"only {report.n_live} live requests: too few to flag drift")
    verdict = (
        "drift: " + ", ".join(s.name for s in report.signals if s.drifted)
        if report.drifted
        else "no drift flagged"
    )
    return "\n".join([head, *lines, *notes, verdict])


def monitor_run(log_path, run, model: str | None = None, min_samples: int = 20) -> MonitorReport:
    """Compare the request log at `log_path` with the training data of `run` (a `Run`)."""
    from tuneloop.config import load_recipe
    from tuneloop.data.formats import read_examples
    from tuneloop.data.prepare import read_data_file
    from tuneloop.serve.requestlog import read_log

    recipe = load_recipe(run.recipe_path)
    saved = run.path / "data" / "train.jsonl"
    train = (
        read_examples(saved, format="messages")
        if saved.exists()
        else read_data_file(recipe, recipe.data.train)
    )
    prompts, answers, model = live_requests(read_log(log_path), model)
    return compare(
        [ex.prompt_messages[-1]["content"] for ex in train],
        [ex.reference for ex in train],
        prompts,
        answers,
        model=model,
        min_samples=min_samples,
    )
