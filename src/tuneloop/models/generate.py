"""Batched greedy generation with a KV cache, prompts rendered exactly as in training.

Answers are kept in a cache on disk (`GenerationCache`), so `advise`, `eval`, `gate` and every
later run that asks the same model the same prompt with the same decoding settings reuse the
answer instead of generating it again. The command line turns the cache on for the length of
one command (`tuneloop --no-cache ...` or `TUNELOOP_NO_CACHE=1` turn it off); a library call
uses it only when given one, or when one is active (`use_cache`).

The number of torch threads matters as much as batching on a shared CPU (`choose_threads`).
torch is imported inside the functions that need it, so `tuneloop --help` stays fast.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
import sys
import time
import weakref
from contextlib import closing, suppress
from pathlib import Path
from typing import TYPE_CHECKING

from tuneloop.data.templates import render_prompt

if TYPE_CHECKING:
    # layer-exception: a type hint only; constrain uses this module's stop tokens at run time
    from tuneloop.models.constrain import JsonConstraint

NO_CACHE_ENV = "TUNELOOP_NO_CACHE"
# A derived `eval.max_new_tokens` is the longest reference plus a quarter (at least 8 tokens),
# never more than this: a few very long references should not make every answer slow.
DERIVED_NEW_TOKENS_CAP = 512


def stop_token_ids(tokenizer) -> list[int]:
    """End-of-sequence plus the template's end-of-turn token, where the two differ."""
    ids = {tokenizer.eos_token_id}
    for token in ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>"):
        tid = tokenizer.convert_tokens_to_ids(token)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id:
            ids.add(tid)
    return sorted(i for i in ids if i is not None)


def generate(
    model,
    tokenizer,
    prompts: list[list[dict[str, str]]],
    max_new_tokens: int = 32,
    batch_size: int = 16,
    precision: str = "fp32",
    progress: bool = False,
    cache: GenerationCache | bool | None = None,
    usage: list[dict] | None = None,
    tools: list[list[dict] | None] | None = None,
    constraint: JsonConstraint | None = None,
) -> list[str]:
    """Greedy answers to chat prompts, in input order; `tools[i]`, when given, are the tools
    prompt i offers (rendered by the chat template, as in training).

    `usage`, when given, is filled with one entry per prompt, the same keys an endpoint's
    reply has (`remote.Reply.usage`): `prompt_tokens`, `completion_tokens`, `latency_s` (the
    wall time of the batch the prompt was answered in: every request of a batch waits for it
    all), `machine_s` (that time shared among the batch: what the answer cost the machine) and
    `cached`. A cached answer brings the usage measured when it was generated.

    Prompts are sorted by length so each batch pads little, left-padded so every row's next
    token is at the same position, and stop at the end-of-turn token.

    `constraint`, when given, holds every answer to JSON valid under its schema (grammar-
    constrained decoding, `models.constrain`); its schema is part of the cache key, so a
    constrained answer is never served for an unconstrained request, nor the other way.

    `cache`: None uses the active cache (`use_cache`; the command line sets one), False none,
    or the given `GenerationCache`. Only prompts the cache does not hold reach the model. A
    cached answer is the one the first run produced: with bf16 and padding, a prompt batched
    with other prompts can, rarely, take another greedy path, and the cache makes every later
    evaluation agree with the first instead.
    """
    import torch

    cache = _chosen_cache(cache)
    device = next(model.parameters()).device
    offered = tools or [None] * len(prompts)
    texts = [render_prompt(tokenizer, p, t) for p, t in zip(prompts, offered, strict=True)]
    stops = stop_token_ids(tokenizer)
    pad = tokenizer.pad_token_id
    answers: list[str] = [""] * len(prompts)
    keys: list[str] | None = None
    found: dict[str, str] = {}
    if cache is not None and texts:
        settings = {"max_new_tokens": max_new_tokens, "batch_size": batch_size,
                    "precision": precision, "device": device.type, "do_sample": False,
                    "stops": stops, "pad": pad}  # fmt: skip
        if constraint is not None:
            settings["constraint"] = constraint.cache_key
        keys = cache_keys(model, tokenizer, settings, texts)
        found = cache.get(keys) if keys is not None else {}
    todo = [i for i in range(len(texts)) if keys is None or keys[i] not in found]
    spent: list[dict] = [{} for _ in texts]
    if keys is not None and usage is not None:
        before = cache.get_usage([keys[i] for i in range(len(texts)) if keys[i] in found])
        for i in range(len(texts)):
            spent[i] = {**before.get(keys[i], {}), "cached": True}
    for i in range(len(texts)):
        if keys is not None and keys[i] in found:
            answers[i] = found[keys[i]]
    if todo:
        with torch.no_grad():
            _generate(model, tokenizer, texts, todo, answers, max_new_tokens, batch_size,
                      precision, progress, stops, pad, device, spent, constraint)  # fmt: skip
    if cache is not None and keys is not None:
        cache.put({keys[i]: answers[i] for i in todo}, {keys[i]: spent[i] for i in todo})
        cache.hits += len(texts) - len(todo)
        cache.generated += len(todo)
    if usage is not None:
        usage[:] = spent
    return answers


def _generate(model, tokenizer, texts, todo, answers, max_new_tokens, batch_size, precision,
              progress, stops, pad, device, spent, constraint=None) -> None:  # fmt: skip
    """Answer `texts[i]` for every i in `todo`, into `answers[i]`; what each cost into
    `spent[i]`. A `constraint` gets a fresh logits processor per batch (it keeps each row's
    parse state)."""
    import torch
    from tqdm.auto import tqdm

    from tuneloop.models.precision import autocast
    from tuneloop.models.virtual import greedy_batch, virtual_tokens_of

    encoded = {i: tokenizer(texts[i], add_special_tokens=False)["input_ids"] for i in todo}
    order = sorted(todo, key=lambda i: len(encoded[i]))
    model.eval()
    # A prompt-learning adapter decodes through our loop: PEFT's generate does not put its
    # virtual tokens where training did (models/virtual.py).
    virtual = virtual_tokens_of(model)
    if virtual is not None and constraint is not None:
        raise ValueError("constrained decoding is not available for a prompt-learning adapter")
    starts = range(0, len(order), batch_size)
    for start in tqdm(starts, desc="generate", disable=not progress, file=sys.stderr):
        chunk = order[start : start + batch_size]
        width = max(len(encoded[i]) for i in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)  # (B, T), left-padded
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, i in enumerate(chunk):
            n = len(encoded[i])
            ids[row, width - n :] = torch.tensor(encoded[i])
            mask[row, width - n :] = 1
        extra = {}
        if constraint is not None:
            extra["logits_processor"] = [constraint.logits_processor(len(chunk))]
        started = time.perf_counter()
        with autocast(precision, device):
            if virtual is not None:
                rows = [(virtual, encoded[i]) for i in chunk]
                out = greedy_batch(model.get_base_model(), rows, stops, max_new_tokens)
            else:
                out = model.generate(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device),
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    eos_token_id=stops,
                    pad_token_id=pad,
                    **extra,
                )[:, width:].tolist()
        seconds = time.perf_counter() - started
        for row, i in enumerate(chunk):
            new = [t for t in out[row] if t not in stops and t != pad]
            answers[i] = tokenizer.decode(new, skip_special_tokens=True).strip()
            spent[i] = {"prompt_tokens": len(encoded[i]), "completion_tokens": len(new),
                        "latency_s": seconds, "machine_s": seconds / len(chunk),
                        "cached": False}  # fmt: skip


# -- the cache of answers ---------------------------------------------------------------------


class GenerationCache:
    """Answers on disk, one SQLite file in `folder`, keyed by what decides an answer: the
    model's content (`model_fingerprint`: every weight, the adapter's included, and the model
    and generation configs), the tokenizer's, the decoding settings, the library versions and
    the rendered prompt. Another adapter, another template or another `max_new_tokens` is
    another key, never a stale answer. `hits` and `generated` count answers over its life.

        >>> import tempfile
        >>> cache = GenerationCache(Path(tempfile.mkdtemp()))
        >>> cache.put({"k1": "refund_request"})
        >>> cache.get(["k1", "k2"])
        {'k1': 'refund_request'}
    """

    def __init__(self, folder: Path | str):
        self.folder = Path(folder)
        self.hits = 0
        self.generated = 0

    @property
    def path(self) -> Path:
        return self.folder / "generations.sqlite"

    def _connect(self) -> sqlite3.Connection:
        self.folder.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=60)  # other processes may be writing
        con.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, answer TEXT)")
        con.execute("CREATE TABLE IF NOT EXISTS usage (key TEXT PRIMARY KEY, usage TEXT)")
        return con

    def get(self, keys: list[str]) -> dict[str, str]:
        """The answers the cache holds, by key."""
        return dict(self._select("answers", "answer", keys))

    def get_usage(self, keys: list[str]) -> dict[str, dict]:
        """What generating each answer cost when it was generated (`generate`'s `usage`)."""
        return {k: json.loads(u) for k, u in self._select("usage", "usage", keys)}

    def _select(self, table: str, column: str, keys: list[str]) -> list[tuple[str, str]]:
        if not self.path.exists():
            return []
        with closing(self._connect()) as con:
            return rows_by_key(con, table, column, keys)

    def put(self, answers: dict[str, str], usage: dict[str, dict] | None = None) -> None:
        if not answers:
            return
        with closing(self._connect()) as con, con:
            con.executemany("INSERT OR REPLACE INTO answers VALUES (?, ?)", answers.items())
            rows = [(k, json.dumps({**u, "cached": False})) for k, u in (usage or {}).items()]
            con.executemany("INSERT OR REPLACE INTO usage VALUES (?, ?)", rows)


def rows_by_key(con: sqlite3.Connection, table: str, column: str, keys: list[str]) -> list:
    """(key, value) rows of `table` for the given keys, asked 500 at a time (SQLite's limit on
    bound parameters); the answer caches on disk all read this way."""
    rows: list = []
    unique = list(dict.fromkeys(keys))
    for start in range(0, len(unique), 500):
        part = unique[start : start + 500]
        marks = ",".join("?" * len(part))
        query = f"SELECT key, {column} FROM {table} WHERE key IN ({marks})"
        rows += con.execute(query, part).fetchall()
    return rows


def default_cache_folder() -> Path:
    """`$TUNELOOP_CACHE/generations`, else `~/.cache/tuneloop/generations`: beside the converted
    models (`models.load.cache_dir`)."""
    from tuneloop.models.load import cache_dir

    return cache_dir().parent / "generations"


_active: GenerationCache | None = None


def use_cache(cache: GenerationCache | None) -> GenerationCache | None:
    """Make `cache` the one `generate` uses when not told otherwise; return the one before."""
    global _active
    before, _active = _active, cache
    return before


def cache_off_by_env() -> bool:
    """True when `TUNELOOP_NO_CACHE` is set to anything but 0/false/no/empty."""
    return os.environ.get(NO_CACHE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def active_cache() -> GenerationCache | None:
    """The cache `generate` uses by default: none while `TUNELOOP_NO_CACHE` is set."""
    return None if cache_off_by_env() else _active


def _chosen_cache(cache: GenerationCache | bool | None) -> GenerationCache | None:
    if cache is False or cache_off_by_env():
        return None
    if cache is None or cache is True:
        return _active
    return cache


def cache_keys(model, tokenizer, settings: dict, texts: list[str]) -> list[str] | None:
    """One key per rendered prompt; None when the model has no readable weights (meta
    tensors, offloaded layers), whose answers are then not cached."""
    import torch
    import transformers

    model_id = model_fingerprint(model)
    if model_id is None:
        return None
    fixed = json.dumps(
        [model_id, tokenizer_fingerprint(tokenizer), settings, torch.__version__,
         transformers.__version__], sort_keys=True,
    )  # fmt: skip
    base = hashlib.sha256(fixed.encode())
    keys = []
    for text in texts:
        h = base.copy()
        h.update(b"\0" + text.encode())
        keys.append(h.hexdigest())
    return keys


# Fingerprints are computed once per object and state: hashing a 135M-parameter model takes
# about a second on one core, so it is done once per model, not once per call.
_model_memo: dict[int, tuple] = {}
_tokenizer_memo: dict[int, tuple] = {}


def _config_json(config) -> str:
    if config is None:
        return ""
    data = config.to_dict()
    # the folder the model was read from and the writing library's version are not content
    data = {k: v for k, v in data.items() if not k.startswith("_") and k != "transformers_version"}
    return json.dumps(data, sort_keys=True, default=str)


def model_fingerprint(model) -> str | None:
    """A hash of everything in the model that decides an answer: its class, every parameter and
    buffer (name, dtype, shape, bytes; a PEFT model's adapter weights are among them), its
    config and generation config. None when some weight is not in memory (meta tensors)."""
    import torch

    tensors = [*model.named_parameters(), *model.named_buffers()]
    # A tensor's `_version` rises with every in-place change (an optimizer step, a merge), so
    # the memo is redone after training touched the weights.
    state = tuple((name, id(t), t._version) for name, t in tensors)
    memo = _model_memo.get(id(model))
    if memo and memo[0]() is model and memo[1] == state:
        return memo[2]
    h = hashlib.sha256(type(model).__name__.encode())
    h.update(_config_json(getattr(model, "config", None)).encode())
    h.update(_config_json(getattr(model, "generation_config", None)).encode())
    for name, t in tensors:
        if t.device.type == "meta":
            return None
        h.update(f"\0{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        flat = t.detach().reshape(-1).contiguous()
        if flat.numel():
            h.update(flat.view(torch.uint8).cpu().numpy().data)
    digest = h.hexdigest()
    with suppress(TypeError):  # an object without weak references is hashed again next time
        _model_memo[id(model)] = (weakref.ref(model), state, digest)
    return digest


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash of the tokenizer: its full serialisation where it has one (fast tokenizers), else
    its vocabulary, plus the chat template and the special tokens."""
    template = getattr(tokenizer, "chat_template", None)
    specials = [getattr(tokenizer, f"{n}_token_id", None) for n in ("pad", "eos", "bos", "unk")]
    state = (len(tokenizer), str(template), tuple(specials))
    memo = _tokenizer_memo.get(id(tokenizer))
    if memo and memo[0]() is tokenizer and memo[1] == state:
        return memo[2]
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        body = backend.to_str()
    else:
        body = json.dumps(sorted(tokenizer.get_vocab().items()))
    h = hashlib.sha256(type(tokenizer).__name__.encode())
    h.update(json.dumps([body, state[1], state[2]]).encode())
    digest = h.hexdigest()
    with suppress(TypeError):
        _tokenizer_memo[id(tokenizer)] = (weakref.ref(tokenizer), state, digest)
    return digest


# -- the answer length ------------------------------------------------------------------------


def new_token_budget(reference_tokens: list[int], configured: int | None) -> dict:
    """How many new tokens each answer may have, and why: `eval.max_new_tokens` when it is set,
    else derived from the references' token lengths: the longest plus a quarter (at least 8
    tokens of margin, for a fence or a wordier answer), capped at `DERIVED_NEW_TOKENS_CAP`.
    `references_cut` counts the references longer than the budget: those cannot be answered
    in full, so they are wrong before the model is asked.

        >>> budget = new_token_budget([12, 40, 7], None)
        >>> budget["value"], budget["source"], budget["references_cut"]
        (50, 'derived', 0)
        >>> budget["why"]
        'eval.max_new_tokens is not set: the longest of 3 references has 40 tokens, plus 10'
        >>> new_token_budget([12, 40, 7], 32)["references_cut"]
        1
    """
    longest = max(reference_tokens, default=0)
    n = len(reference_tokens)
    if configured is not None:
        value, source = configured, "eval.max_new_tokens"
        why = f"set in the recipe (eval.max_new_tokens: {configured})"
    else:
        margin = max(8, math.ceil(longest / 4))
        value, source = min(longest + margin, DERIVED_NEW_TOKENS_CAP), "derived"
        why = (f"eval.max_new_tokens is not set: the longest of {n} references has {longest} "
               f"tokens, plus {margin}")  # fmt: skip
        if value < longest + margin:
            why += f", capped at {DERIVED_NEW_TOKENS_CAP}"
    cut = sum(1 for t in reference_tokens if t > value)
    return {"value": value, "source": source, "longest_reference": longest,
            "references_cut": cut, "why": why}  # fmt: skip


# -- threads ----------------------------------------------------------------------------------


def choose_threads(cores: int, load: float | None) -> tuple[int, str]:
    """Torch threads for this process, and why, from the usable physical `cores` and the
    1-minute load average (`load`; None where the system has none).

    One thread per physical core is fastest on a quiet machine: a second thread on the same
    core (SMT) only competes for its arithmetic units. When other processes already keep
    cores busy, threads that wait for a core spin in OpenMP barriers: on a 2-core machine at
    load 6, generation ran 7x slower with 2 threads than with 1. So the cores the load leaves
    free are taken, at least one.

        >>> choose_threads(2, 6.3)[0], choose_threads(2, 0.2)[0], choose_threads(16, 4.0)[0]
        (1, 2, 12)
    """
    cores = max(1, cores)
    if load is None:
        return cores, f"{cores} physical core(s); no load average to read"
    free = max(1, min(cores, math.floor(cores - load + 0.5)))
    if free == cores:
        return cores, f"{cores} physical core(s), load average {load:.1f}: the machine is quiet"
    return free, (
        f"{cores} physical core(s), load average {load:.1f}: the machine is busy, so "
        f"{free} thread(s) spin less"
    )


def usable_cores() -> int:
    """Physical cores this process may use: psutil's count of physical cores, limited by the
    CPU affinity and by a cgroup quota (a container given 2 CPUs of a 64-core host)."""
    logical = os.cpu_count() or 1
    try:
        import psutil

        physical = psutil.cpu_count(logical=False) or logical
    except ImportError:  # pragma: no cover
        physical = logical
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else logical
    # threads per core: 2 on a typical SMT machine; the affinity counts logical CPUs
    per_core = max(1, logical // max(1, physical))
    cores = min(physical, max(1, allowed // per_core))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # pragma: no cover (Windows)
        return None
