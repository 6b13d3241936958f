"""Which grammar-constrained decoding library tuneloop uses for JSON answers, by measurement.

    # only llguidance is a tuneloop dependency; the other candidates, for this bench only:
    .venv/bin/pip install -c constraints.txt xgrammar==0.2.9 outlines==1.3.3 \
        lm-format-enforcer==0.11.3
    .venv/bin/python bench/structured/pick.py --threads 1      # 100 schemas, 5 repeats (~25 min)
    .venv/bin/python bench/structured/pick.py --threads 1 --bounded --no-overhead \
        --out bench/structured/results/pick_bounded.json      # every field bounded (~10 min)
    .venv/bin/python bench/structured/pick.py --schemas 16 --repeats 1   # a quick look

Candidates: xgrammar, llguidance, outlines (its JSON-schema backend, outlines-core) and
lm-format-enforcer, each driven through its own matcher API by a logits processor written
here (one matcher per row of the batch, every library's bitmask applied to the logits by the
same code), on the embedded model `smollm2-135m-instruct` and its tokenizer, bf16 autocast as
`tuneloop.models.generate` uses. xgrammar and llguidance write the same one-line JSON
(json.dumps's separators); outlines-core allows one optional space; lm-format-enforcer at most
one whitespace character in a row (its only setting).

Measured, per library, in one process:

- correctness: 100 prompts, each asking for an object of its own schema
  (bench/structured/schemas.py, seeded), greedy, batch 8 (rows of a batch carry different
  schemas), at most 64 new tokens. `valid`: the answer parses and validates with
  `jsonschema`; `ended`: it stopped at the end-of-turn token within the budget; `ended but
  invalid`: the library's own failures (a cut answer is mostly the small model repeating a
  digit inside an unbounded integer or string). `--bounded` gives every string, integer and
  number a bound, the structure staying the same.
- compile: milliseconds to compile each schema for the tokenizer (median and max over the
  100); `setup`: the one-time preparation of the tokenizer.
- overhead: the same 16 prompts (2 batches of 8) generated with each library and without any
  constraint, the libraries taking turns in a rotated order each repeat after one warm-up
  round, median over repeats, per decoding step (one token for each of the 8 rows, the
  prompt's forward pass left out): `library` is the library's own time (feeding tokens,
  filling masks), `masking` that plus applying the mask, both timed inside the logits
  processor; `end to end` is the step time with the constraint minus without. On a shared
  2-core CPU the step time varies by +-20% between runs, far more than the masking costs, so
  `masking` is the figure to compare.

Results (bench/structured/results/pick.json and pick_bounded.json, 2026-12, 1 thread, load
average about 3 from other work on the machine; unconstrained: 117 ms per step):

    library             valid  ended  ended but  valid/ended  compile ms  setup  masking
                                      invalid    bounded      median/max  ms     ms/step
    xgrammar 0.2.9      94     93     0          98/98        12.0/23.3   454    0.99
    llguidance 1.9.1    94     94     0          100/100      0.9/2.5     619    1.61
    outlines 1.3.3      88     91     4          88/93        196/598     211    1.01
    lm-format-enf 0.11  85     87     5          86/90        0.2/1.1     1671   0.94

The pick, llguidance: correctness first, it is one of the two that never ended an answer
outside the schema (outlines and lm-format-enforcer ignore `minimum`/`maximum`), it ties
xgrammar on free schemas and is the only one at 100 of 100 valid and ended when every field
is bounded. Then speed: it compiles a schema 13 times faster than xgrammar (0.9 ms against 12;
a server meets new schemas per request), and its masking costs 0.6 ms more per step of 8 rows
than xgrammar's, 0.5% of a step, below what the end-to-end time can resolve. Last, weight:
llguidance is one 3 MB wheel without dependencies; xgrammar needs triton (1 GB installed) and
apache-tvm-ffi. lm-format-enforcer's transformers integration does not import under
transformers 5; its tokenizer data is built here as that integration builds it.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from schemas import schema_set  # noqa: E402

LIBRARIES = ["xgrammar", "llguidance", "outlines", "lm-format-enforcer"]


# -- one matcher per row, one logits processor for all libraries -------------------------------


class RowProcessor:
    """A `transformers` logits processor that keeps one library state per row: it feeds each
    row the token it chose last step, has the library fill the row's bitmask of allowed
    tokens, and sets every other logit to -inf. A row that chose a stop token is finished:
    transformers pads it from then on, so its row allows everything. With no backend it only
    keeps time (the unconstrained runs).

    Timing: `library_seconds` is the library's own work (feeding tokens, filling masks),
    `seconds` that plus applying the masks to the logits (the same code for every library),
    `calls` the steps; `first_at` is when the first call came, right after the prompt's
    forward pass, so decoding steps can be timed apart from the prompt. `rejected` counts
    tokens a state refused (never expected: each was allowed by the mask before)."""

    def __init__(self, backend, compiled: list, stops: list[int], vocab: int = 0):
        import torch

        self.backend = backend
        self.states = [backend.start(c) for c in compiled] if backend else []
        self.stops = set(stops)
        self.done = [False] * len(compiled)
        words = (vocab + 31) // 32
        self.bitmask = torch.full((len(compiled), words), -1, dtype=torch.int32)  # (B, W)
        self.first_at: float | None = None
        self.seconds = self.library_seconds = 0.0
        self.calls = 0
        self.rejected = 0

    def __call__(self, input_ids, scores):
        started = time.perf_counter()
        self.calls += 1
        if self.backend is None:
            self.first_at = self.first_at or started
            return scores
        ids = input_ids[:, -1].tolist()  # (B,)
        for row, state in enumerate(self.states):
            if self.done[row] or self.first_at is None:
                continue
            if ids[row] in self.stops:
                self.done[row] = True
                self.bitmask[row] = -1
            elif not self.backend.advance(state, ids[row]):
                self.rejected += 1
        self.first_at = self.first_at or started
        for row, state in enumerate(self.states):
            if not self.done[row]:
                self.backend.fill(state, self.bitmask, row, input_ids[row])
        self.library_seconds += time.perf_counter() - started
        apply_bitmask(scores, self.bitmask)
        self.seconds += time.perf_counter() - started
        return scores


def apply_bitmask(scores, bitmask) -> None:
    """Set to -inf, in place, every logit (B, V) whose bit is 0 in `bitmask` (B, ceil(V/32))
    int32: bit j of word w stands for token 32*w + j, so the little-endian bytes unpacked
    least significant bit first are the tokens in order."""
    import numpy as np
    import torch

    bits = np.unpackbits(bitmask.numpy().view(np.uint8), axis=1, bitorder="little")
    allowed = torch.from_numpy(bits[:, : scores.shape[1]].view(np.bool_))  # (B, V)
    scores.masked_fill_(~allowed, float("-inf"))


# xgrammar and llguidance write the same one-line JSON, `{"a": 1, "b": [2, 3]}`, the
# separators json.dumps uses; outlines-core allows one optional space ("[ ]?") around them.
COMPACT = {"any_whitespace": False, "separators": (", ", ": ")}
SEPARATORS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


class XGrammar:
    name = "xgrammar"

    def setup(self, tokenizer, vocab: int, stops: list[int]) -> None:
        import xgrammar as xgr

        self.xgr, self.vocab = xgr, vocab
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab,
                                                  stop_token_ids=stops)  # fmt: skip
        self.compiler = xgr.GrammarCompiler(info, max_threads=1, cache_enabled=False)

    def compile(self, schema: dict | None):
        if schema is None:  # any object: strict mode would allow only {}
            return self.compiler.compile_json_schema('{"type": "object"}', **COMPACT,
                                                     strict_mode=False)  # fmt: skip
        return self.compiler.compile_json_schema(json.dumps(schema), **COMPACT)

    def start(self, compiled):
        return self.xgr.GrammarMatcher(compiled)

    def advance(self, matcher, token: int) -> bool:
        return matcher.accept_token(token)

    def fill(self, matcher, bitmask, row: int, row_ids) -> None:
        matcher.fill_next_token_bitmask(bitmask, row)


class LLGuidance:
    name = "llguidance"

    def setup(self, tokenizer, vocab: int, stops: list[int]) -> None:
        import llguidance
        import llguidance.hf

        self.llg, self.vocab = llguidance, vocab
        self.tokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab, eos_token=stops)

    def compile(self, schema: dict | None):
        grammar = self.llg.LLMatcher.grammar_from_json_schema(
            schema or {"type": "object"}, defaults=SEPARATORS
        )
        matcher = self.llg.LLMatcher(self.tokenizer, grammar)
        if matcher.is_error():
            raise ValueError(matcher.get_error())
        return matcher  # a template: each row starts from a copy

    def start(self, compiled):
        return compiled.deep_copy()

    def advance(self, matcher, token: int) -> bool:
        return matcher.consume_token(token)

    def fill(self, matcher, bitmask, row: int, row_ids) -> None:
        v = bitmask[row]
        matcher.unsafe_compute_mask_ptr(v.data_ptr(), v.numel() * v.element_size())


class OutlinesCore:
    """outlines' JSON-schema backend (outlines-core): a regex from the schema, an index of
    the regex over the vocabulary. The vocabulary is built as outlines' backend builds it,
    less the special tokens (else `<|im_start|>` could appear inside a JSON string)."""

    name = "outlines"

    def setup(self, tokenizer, vocab: int, stops: list[int]) -> None:
        import outlines_core

        self.oc, self.vocab = outlines_core, vocab
        specials = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
        words: dict[str, list[int]] = {}
        for token, tid in tokenizer.get_vocab().items():
            if tid not in specials and tid < vocab:
                words.setdefault(tokenizer.convert_tokens_to_string([token]), []).append(tid)
        self.vocabulary = outlines_core.Vocabulary(stops[0], words)

    def compile(self, schema: dict | None):
        from outlines_core.json_schema import build_regex_from_schema

        regex = build_regex_from_schema(json.dumps(schema or {"type": "object"}))
        return self.oc.Index(regex, self.vocabulary)

    def start(self, compiled):
        return self.oc.Guide(compiled)

    def advance(self, guide, token: int) -> bool:
        try:
            guide.advance(token_id=token, return_tokens=False)
        except ValueError:
            return False
        return True

    def fill(self, guide, bitmask, row: int, row_ids) -> None:
        v = bitmask[row]
        guide.write_mask_into(v.data_ptr(), v.numel(), v.element_size())


class FormatEnforcer:
    """lm-format-enforcer. Its transformers integration does not import under transformers 5
    (`transformers.tokenization_utils` is gone), so its tokenizer data is built here the way
    that integration builds it; the rest is the library's own `TokenEnforcer`."""

    name = "lm-format-enforcer"

    def setup(self, tokenizer, vocab: int, stops: list[int]) -> None:
        import os

        from lmformatenforcer import TokenEnforcerTokenizerData

        # its only whitespace setting, read by every parser it makes: one space at most
        os.environ.setdefault("LMFE_MAX_CONSECUTIVE_WHITESPACES", "1")

        zero = tokenizer.encode("0", add_special_tokens=False)[-1]
        specials = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
        regular = []
        for tid in range(vocab):
            if tid in specials:
                continue
            after_zero = tokenizer.decode([zero, tid])[1:]  # keeps a word's leading space
            regular.append((tid, after_zero, len(after_zero) > len(tokenizer.decode([tid]))))

        def decode(tokens: list[int]) -> str:
            return tokenizer.decode(tokens).rstrip("\ufffd")

        self.data = TokenEnforcerTokenizerData(regular, decode, stops, True, vocab)  # bitmask

    def compile(self, schema: dict | None):
        from lmformatenforcer import JsonSchemaParser, TokenEnforcer

        return TokenEnforcer(self.data, JsonSchemaParser(schema or {"type": "object"}))

    def start(self, compiled):
        return compiled  # states are keyed by the row's tokens inside the enforcer

    def advance(self, enforcer, token: int) -> bool:
        return True  # the enforcer reads the whole row when asked for the mask

    def fill(self, enforcer, bitmask, row: int, row_ids) -> None:
        bitmask[row] = enforcer.get_allowed_tokens(row_ids.tolist()).allowed_tokens


BACKENDS = {"xgrammar": XGrammar, "llguidance": LLGuidance, "outlines": OutlinesCore,
            "lm-format-enforcer": FormatEnforcer}  # fmt: skip
DISTRIBUTIONS = {"xgrammar": "xgrammar", "llguidance": "llguidance", "outlines": "outlines",
                 "lm-format-enforcer": "lm-format-enforcer"}  # fmt: skip


# -- generation ------------------------------------------------------------------------------


def run_batch(model, tokenizer, texts, processor, max_new_tokens, precision, stops):
    """Greedy answers to rendered prompts, left-padded as `tuneloop.models.generate` pads,
    whether each ended with a stop token, and the seconds from the first decoding step on."""
    import torch

    from tuneloop.models.precision import autocast

    pad = tokenizer.pad_token_id
    encoded = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    width = max(len(e) for e in encoded)
    ids = torch.full((len(texts), width), pad, dtype=torch.long)  # (B, T), left-padded
    mask = torch.zeros((len(texts), width), dtype=torch.long)
    for row, e in enumerate(encoded):
        ids[row, width - len(e) :] = torch.tensor(e)
        mask[row, width - len(e) :] = 1
    with torch.no_grad(), autocast(precision, torch.device("cpu")):
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                             do_sample=False, eos_token_id=stops, pad_token_id=pad,
                             logits_processor=[processor])  # fmt: skip
    decoding = time.perf_counter() - processor.first_at  # after the prompt's forward pass
    answers, ended = [], []
    for row in range(len(texts)):
        new = out[row, width:].tolist()
        stop_at = next((k for k, t in enumerate(new) if t in stops), None)
        ended.append(stop_at is not None)
        kept = new if stop_at is None else new[:stop_at]
        answers.append(tokenizer.decode(kept, skip_special_tokens=True).strip())
    return answers, ended, decoding


def check(answer: str, schema: dict) -> str | None:
    """None when `answer` is JSON valid under `schema`, else why not."""
    import jsonschema

    try:
        value = json.loads(answer)
    except json.JSONDecodeError as e:
        return f"not JSON: {e}"
    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError as e:
        return f"invalid: {e.message}"
    return None


# -- the measurements ------------------------------------------------------------------------


def measure_compile(backend, items) -> tuple[list, list[float], list[str | None]]:
    compiled, ms, errors = [], [], []
    for item in items:
        started = time.perf_counter()
        try:
            compiled.append(backend.compile(item["schema"]))
            errors.append(None)
        except Exception as e:  # a schema the library cannot compile counts against it
            compiled.append(None)
            errors.append(f"{type(e).__name__}: {e}"[:300])
        ms.append((time.perf_counter() - started) * 1000)
    return compiled, ms, errors


def measure_correctness(name, backend, compiled, errors, items, texts, ctx) -> dict:
    """Answers to every item, its own schema per row. An answer that ended (stop token within
    the budget) but is not valid is the library's fault; one cut by the budget is usually the
    model's (a small model can repeat a digit or a word forever inside an unbounded integer or
    string), so the two are counted apart."""
    valid = ended = rejected = 0
    failures, unsound = [], []
    for start in range(0, len(items), ctx["batch"]):
        rows = list(range(start, min(start + ctx["batch"], len(items))))
        usable = [r for r in rows if compiled[r] is not None]
        for r in rows:
            if compiled[r] is None:
                failures.append({"item": r, "why": f"compile: {errors[r]}"})
        if not usable:
            continue
        proc = RowProcessor(backend, [compiled[r] for r in usable], ctx["stops"], ctx["vocab"])
        answers, ends, _ = run_batch(ctx["model"], ctx["tokenizer"], [texts[r] for r in usable],
                                     proc, ctx["max_new_tokens"], ctx["precision"],
                                     ctx["stops"])  # fmt: skip
        rejected += proc.rejected
        for r, answer, end in zip(usable, answers, ends, strict=True):
            why = check(answer, items[r]["schema"])
            valid += why is None
            ended += end
            if why or not end:
                failure = {"item": r, "ended": end, "why": why or "did not end", "answer": answer}
                failures.append(failure)
                if end:
                    unsound.append(failure)
        print(f"  {name:18} correctness {rows[-1] + 1:3}/{len(items)}", flush=True)
    return {"valid": valid, "ended": ended, "n": len(items), "ended_but_invalid": len(unsound),
            "rejected_tokens": rejected, "unsound": unsound, "failures": failures}  # fmt: skip


def measure_overhead(backends, compiled, texts, ctx, repeats: int, batches: int) -> dict:
    """ms per decoding step with each library and with none, rotated turns, after a warm-up."""
    names = ["none", *backends]
    chunks = [list(range(b * ctx["batch"], (b + 1) * ctx["batch"])) for b in range(batches)]
    runs: dict[str, list[dict]] = {n: [] for n in names}

    def one_round(name):
        seconds = steps = masking = library = 0.0
        for rows in chunks:
            backend = backends.get(name)
            chosen = [compiled[name][r] for r in rows] if backend else rows
            proc = RowProcessor(backend, chosen, ctx["stops"], ctx["vocab"])
            _, _, s = run_batch(
                ctx["model"],
                ctx["tokenizer"],
                [texts[r] for r in rows],
                proc,
                ctx["max_new_tokens"],
                ctx["precision"],
                ctx["stops"],
            )
            # calls - 1 forward passes after the first call; every call is one masking
            seconds, steps = seconds + s, steps + proc.calls - 1
            masking, library = masking + proc.seconds, library + proc.library_seconds
        return {"seconds": seconds, "steps": steps, "ms_per_step": 1000 * seconds / steps,
                "masking_ms_per_step": 1000 * masking / steps,
                "library_ms_per_step": 1000 * library / steps}  # fmt: skip

    for name in names:  # warm-up: first calls allocate and pick kernels
        one_round(name)
    for repeat in range(repeats):
        k = repeat % len(names)
        for name in names[k:] + names[:k]:
            runs[name].append(one_round(name))
            print(f"  repeat {repeat + 1}: {name:18} {runs[name][-1]['ms_per_step']:7.1f} "
                  f"ms/step", flush=True)  # fmt: skip
    base = statistics.median(r["ms_per_step"] for r in runs["none"])
    out = {}
    for name in names:
        step = statistics.median(r["ms_per_step"] for r in runs[name])
        out[name] = {"ms_per_step": step,
                     "masking_ms_per_step": statistics.median(
                         r["masking_ms_per_step"] for r in runs[name]),
                     "library_ms_per_step": statistics.median(
                         r["library_ms_per_step"] for r in runs[name]),
                     "overhead_ms_per_step": step - base,
                     "overhead_pct": 100 * (step - base) / base, "runs": runs[name]}  # fmt: skip
    return out


def version(name: str) -> str | None:
    try:
        return importlib.metadata.version(DISTRIBUTIONS[name])
    except importlib.metadata.PackageNotFoundError:
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--schemas", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--overhead-batches", type=int, default=2)
    parser.add_argument(
        "--bounded",
        action="store_true",
        help="bound every string, integer and number in the schemas",
    )
    parser.add_argument(
        "--no-overhead", action="store_true", help="measure correctness and compile time only"
    )
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: choose_threads, as tuneloop does)",
    )
    parser.add_argument("--libraries", nargs="*", default=LIBRARIES, choices=LIBRARIES)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "pick.json")
    args = parser.parse_args()

    import torch

    from tuneloop.cli.common import quiet_libraries
    from tuneloop.data.templates import render_prompt
    from tuneloop.models.generate import choose_threads, load_average, stop_token_ids, usable_cores
    from tuneloop.models.load import load
    from tuneloop.models.precision import resolve_precision

    quiet_libraries()
    threads, why = choose_threads(usable_cores(), load_average())
    if args.threads:
        threads, why = args.threads, "--threads"
    torch.set_num_threads(threads)
    model, tokenizer, _ = load("smollm2-135m-instruct")
    model.eval()
    items = schema_set(args.schemas, seed=0, bounded=args.bounded)
    texts = [render_prompt(tokenizer, item["messages"]) for item in items]
    stops = stop_token_ids(tokenizer)
    vocab = model.config.vocab_size
    ctx = {"model": model, "tokenizer": tokenizer, "stops": stops, "batch": 8, "vocab": vocab,
           "max_new_tokens": args.max_new_tokens,
           "precision": resolve_precision("auto", torch.device("cpu"))}  # fmt: skip
    print(f"{len(items)} schemas, {threads} thread(s) ({why}), precision {ctx['precision']}")

    backends, compiled, errors, results = {}, {}, {}, {}
    for name in args.libraries:
        backend = BACKENDS[name]()
        started = time.perf_counter()
        backend.setup(tokenizer, vocab, stops)
        setup_ms = (time.perf_counter() - started) * 1000
        compiled[name], ms, errors[name] = measure_compile(backend, items)
        any_object_ok = True
        try:
            backend.compile(None)
        except Exception:
            any_object_ok = False
        results[name] = {
            "version": version(name),
            "tokenizer_setup_ms": setup_ms,
            "compile_ms_median": statistics.median(ms),
            "compile_ms_max": max(ms),
            "compile_errors": sum(e is not None for e in errors[name]),
            "json_object_mode": any_object_ok,
        }
        backends[name] = backend
        print(
            f"{name}: setup {setup_ms:.0f} ms, compile median {statistics.median(ms):.1f} ms, "
            f"max {max(ms):.1f} ms, errors {results[name]['compile_errors']}",
            flush=True,
        )

    # Correctness, the libraries in turn per batch would only reorder the same work; each
    # library's 100 answers are deterministic (greedy), so they run one library after another.
    for name in args.libraries:
        results[name]["correctness"] = measure_correctness(
            name, backends[name], compiled[name], errors[name], items, texts, ctx
        )

    usable = {n: b for n, b in backends.items() if all(c is not None for c in compiled[n][:16])}
    overhead = {"none": {"ms_per_step": None}}
    if not args.no_overhead:
        overhead = measure_overhead(usable, compiled, texts, ctx, args.repeats,
                                    args.overhead_batches)  # fmt: skip
    for name in args.libraries:
        results[name]["overhead"] = overhead.get(name)

    report = {
        "command": "bench/structured/pick.py " + " ".join(sys.argv[1:]),
        "model": "smollm2-135m-instruct",
        "schemas": len(items),
        "bounded": args.bounded,
        "batch_size": 8,
        "max_new_tokens": args.max_new_tokens,
        "precision": ctx["precision"],
        "threads": threads,
        "torch": torch.__version__,
        "transformers": importlib.metadata.version("transformers"),
        "unconstrained_ms_per_step": overhead["none"]["ms_per_step"],
        "libraries": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"results: {args.out}")
    return 0


def print_table(report: dict) -> None:
    n = report["schemas"]
    head = ("library", "version", "valid", "ended", "ended but", "compile ms", "setup ms",
            "library", "masking", "end to end")  # fmt: skip
    sub = ("", "", "", "", "invalid", "median/max", "once", "ms/step", "ms/step", "ms/step (%)")
    rows = [head, sub]
    for name, r in report["libraries"].items():
        c, o = r["correctness"], r.get("overhead") or {}
        rows.append((
            name, r["version"] or "?", f"{c['valid']}/{n}", f"{c['ended']}/{n}",
            str(c["ended_but_invalid"]),
            f"{r['compile_ms_median']:.1f}/{r['compile_ms_max']:.1f}",
            f"{r['tokenizer_setup_ms']:.0f}",
            f"{o['library_ms_per_step']:.2f}" if o else "n/a",
            f"{o['masking_ms_per_step']:.2f}" if o else "n/a",
            f"{o['overhead_ms_per_step']:+.1f} ({o['overhead_pct']:+.0f}%)" if o else "n/a",
        ))  # fmt: skip
    widths = [max(len(row[k]) for row in rows) for k in range(len(head))]
    print()
    for row in rows:
        print("  ".join(cell.ljust(w) if k < 2 else cell.rjust(w)
                        for k, (cell, w) in enumerate(zip(row, widths, strict=True))))  # fmt: skip
    if report["unconstrained_ms_per_step"] is not None:
        print(f"a step makes one token for each of {report['batch_size']} rows; unconstrained: "
              f"{report['unconstrained_ms_per_step']:.1f} ms per step")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
