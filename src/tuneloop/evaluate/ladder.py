"""The adaptation ladder's rungs: who answers the held-out items, and how they are asked.

A rung is a model and a way of prompting it (`Rung`, from its name by `rung_of`):

- the base model: `zero-shot`, `few-shot`, `retrieval-few-shot` and `rag`;
- a model behind an OpenAI-compatible API (`eval.endpoints`, the hosted model a team uses
  today): `<name>` is asked zero-shot, `<name>+few-shot` and `<name>+rag` as the base model is;
- recorded answers (`eval.recorded`): `<name>`, from a file, for a system that cannot be called;
- `tuned`: the base model with the run's adapter, asked zero-shot.

The ways of prompting:

- `zero-shot`: the task instruction (system prompt) and the item, nothing else;
- `few-shot`: the same k examples from train, as earlier user/assistant turns, before every item;
  shots are drawn from the train examples that share the items' system prompt (the task's);
- `retrieval-few-shot`: the k train examples nearest to each item (BM25 over the user text),
  the nearest placed last, next to the question;
- `rag`: the k passages of the user's documents (`task.knowledge`, `knowledge.py`) nearest to
  the item, put in its user turn; the retrieved passage ids are kept per item;
- `constrained` (a JSON task): zero-shot, with the answer held to `task.json_schema` (any JSON
  object without one) by grammar-constrained decoding (`models/constrain.py`); an endpoint is
  sent the same schema as its `response_format`.

When no train example shares a system prompt with the items (held-out asked under another
instruction than train), both rungs draw from all of train, each item keeps its own system
prompt, and a `UserWarning` says so: never a rung that quietly turns zero-shot.

Shots are chat turns rendered with the model's own template, so a chat model sees a
conversation it already answered k times. For a held-out item "card not arrived yet" and k=2:

    system:    Classify the banking query. Answer with the label only.
    user:      Still waiting on my card?          <- shot (train)
    assistant: card_arrival
    user:      How do I link my new card?         <- shot (train)
    assistant: card_linking
    user:      card not arrived yet               <- the item
"""

from __future__ import annotations

import random
import re
import warnings
from dataclasses import dataclass

from tuneloop.config import EndpointConfig, Recipe, RecordedConfig
from tuneloop.data.records import Example
from tuneloop.errors import UserError

LADDER = ("zero-shot", "few-shot", "retrieval-few-shot")
PROMPTINGS = (*LADDER, "rag", "constrained")


@dataclass(frozen=True)
class Rung:
    """`asks`: who answers ("base", "tuned", "endpoint" or "recorded"); `prompting`: how."""

    name: str
    asks: str
    prompting: str = "zero-shot"
    endpoint: EndpointConfig | None = None
    recorded: RecordedConfig | None = None


def rung_of(name: str, recipe: Recipe) -> Rung:
    """The rung a name stands for in this recipe; an unknown name is a `UserError`.

    >>> from tuneloop.config import validate_recipe
    >>> recipe = validate_recipe({"data": {"train": "t.jsonl"}, "eval": {"endpoints": [
    ...     {"name": "gpt-4o-mini", "url": "http://x/v1", "model": "gpt-4o-mini",
    ...      "prompts": ["zero-shot", "few-shot"]}]}})
    >>> r = rung_of("gpt-4o-mini+few-shot", recipe)
    >>> r.asks, r.prompting, r.endpoint.model
    ('endpoint', 'few-shot', 'gpt-4o-mini')
    """
    if name == "tuned":
        return Rung(name, "tuned")
    known = recipe.rung_names()
    if name not in known:
        raise UserError(
            f"`{name}` is not a rung of this recipe",
            "--rung",
            f"choose from: {', '.join([*known, 'tuned'])} (endpoints and recorded answers are "
            "added in eval.endpoints and eval.recorded, `rag` by task.knowledge)",
        )
    if name in PROMPTINGS:
        return Rung(name, "base", name)
    for recorded in recipe.eval.recorded:
        if name == recorded.name:
            return Rung(name, "recorded", "zero-shot", recorded=recorded)
    endpoint_name, _, prompting = name.partition("+")
    endpoint = next(e for e in recipe.eval.endpoints if e.name == endpoint_name)
    return Rung(name, "endpoint", prompting or "zero-shot", endpoint=endpoint)


_TOKEN = re.compile(r"\w+")


def _query(example: Example) -> str:
    """The text a retrieval matches on: the last user turn of the prompt."""
    return next(m["content"] for m in reversed(example.prompt_messages) if m["role"] == "user")


def _shot_turns(shots: list[Example]) -> list[dict[str, str]]:
    turns: list[dict[str, str]] = []
    for shot in shots:
        turns += [m for m in shot.messages if m["role"] != "system"]
    return turns


def with_shots(example: Example, shots: list[Example]) -> list[dict[str, str]]:
    """The item's prompt with the shots' turns inserted after its system prompt."""
    prompt = example.prompt_messages
    head = [m for m in prompt[:1] if m["role"] == "system"]
    return head + _shot_turns(shots) + prompt[len(head) :]


def pick_shots(train: list[Example], k: int, seed: int = 0) -> list[Example]:
    """k train examples drawn with a seed, covering as many distinct references as possible
    (for a label task: one example per label, in random label order, before any repeat).

        >>> ex = lambda t, a: Example([{"role": "user", "content": t},
        ...                            {"role": "assistant", "content": a}])
        >>> train = [ex("x1", "a"), ex("x2", "a"), ex("x3", "a"), ex("y1", "b")]
        >>> sorted(s.reference for s in pick_shots(train, 2))
        ['a', 'b']
    """
    rng = random.Random(seed)
    order = list(train)
    rng.shuffle(order)
    by_ref: dict[str, list[Example]] = {}
    for ex in order:
        by_ref.setdefault(ex.reference, []).append(ex)
    shots: list[Example] = []
    while len(shots) < min(k, len(train)):
        for group in by_ref.values():
            if group and len(shots) < k:
                shots.append(group.pop())
    rng.shuffle(shots)
    return shots


def _system(example: Example) -> str | None:
    first = example.messages[0]
    return first["content"] if first["role"] == "system" else None


def same_task(items: list[Example], train: list[Example]) -> list[Example]:
    """The train examples asked under the items' system prompt: shots come from the task, not
    from other data mixed into training (say, general chat replayed to keep old skills).

        >>> turn = lambda role, text: {"role": role, "content": text}
        >>> task = Example([turn("system", "Classify."), turn("user", "x"), turn("assistant", "a")])
        >>> chat = Example([turn("user", "hi"), turn("assistant", "hello")])
        >>> [ex.reference for ex in same_task([task], [task, chat])]
        ['a']
    """
    systems = {_system(ex) for ex in items}
    return [ex for ex in train if _system(ex) in systems]


def shot_pool(items: list[Example], train: list[Example], rung: str) -> list[Example]:
    """Where a rung draws its shots: `same_task`, or all of train (said with a warning) when no
    train example is asked under any of the items' system prompts."""
    if not train:
        raise UserError(
            f"the {rung} rung shows training examples before each item, and none were given",
            rung,
            "give the run's training data, or evaluate the zero-shot rung alone",
        )
    own = same_task(items, train)
    if own or not items:
        return own
    asked = sorted({_system(ex) or "" for ex in items})
    taught = sorted({_system(ex) or "" for ex in train})
    warnings.warn(
        f"{rung}: no training example shares a system prompt with the {len(items)} items "
        f"(they are asked under {_quoted(asked)}, train under {_quoted(taught)}); the shots are "
        f"drawn from all {len(train)} training examples, and each item keeps its own system "
        "prompt. To compare like with like, give train and held-out the same system prompt "
        "(`task.instruction`)",
        UserWarning,
        stacklevel=3,
    )
    return list(train)


def _quoted(prompts: list[str], most: int = 2) -> str:
    shown = ", ".join(repr(p[:60]) if p else "no system prompt" for p in prompts[:most])
    return shown + (f" and {len(prompts) - most} more" if len(prompts) > most else "")


def few_shot_prompts(
    items: list[Example], train: list[Example], k: int, seed: int = 0
) -> list[list[dict[str, str]]]:
    shots = pick_shots(shot_pool(items, train, "few-shot"), k, seed)
    return [with_shots(ex, shots) for ex in items]


def retrieval_prompts(
    items: list[Example], train: list[Example], k: int
) -> list[list[dict[str, str]]]:
    """Each item's prompt with its k nearest train examples by BM25 (Okapi), nearest last.

    >>> ex = lambda t, a: Example([{"role": "user", "content": t},
    ...                            {"role": "assistant", "content": a}])
    >>> train = [ex("my card has not arrived", "card_arrival"),
    ...          ex("exchange rate for euros", "exchange_rate"),
    ...          ex("top up failed again", "top_up_failed")]
    >>> prompt = retrieval_prompts([ex("when will my card arrive", "?")], train, 1)[0]
    >>> [m["content"] for m in prompt]
    ['my card has not arrived', 'card_arrival', 'when will my card arrive']
    """
    from rank_bm25 import BM25Okapi

    train = shot_pool(items, train, "retrieval-few-shot")
    tokenize = lambda text: _TOKEN.findall(text.casefold())  # noqa: E731
    corpus = [tokenize(_query(ex)) or ["<empty>"] for ex in train]
    index = BM25Okapi(corpus)
    prompts = []
    for ex in items:
        scores = index.get_scores(tokenize(_query(ex)))
        nearest = sorted(range(len(train)), key=lambda i: (-scores[i], i))[:k]
        prompts.append(with_shots(ex, [train[i] for i in reversed(nearest)]))
    return prompts


def rung_prompts(
    rung: str, items: list[Example], train: list[Example], k_few: int, k_retrieval: int, seed: int
) -> list[list[dict[str, str]]]:
    """The prompts a way of prompting (or a base-model rung's name) gives the model for
    `items` (the tuned rung is asked zero-shot). `rag` needs documents: `rag_prompts`."""
    if rung in ("zero-shot", "tuned", "constrained"):
        return [ex.prompt_messages for ex in items]
    if rung == "few-shot":
        return few_shot_prompts(items, train, k_few, seed)
    if rung == "retrieval-few-shot":
        return retrieval_prompts(items, train, k_retrieval)
    raise ValueError(f"unknown rung {rung!r}; rungs are {', '.join((*LADDER, 'tuned'))}")


def rag_prompts(items: list[Example], knowledge, k: int) -> tuple[list[list[dict]], list[list]]:
    """Each item's prompt with the k passages of `knowledge` (a `knowledge.KnowledgeBase`)
    nearest to its question, and the passages retrieved for each."""
    from tuneloop.evaluate.knowledge import with_passages

    found = knowledge.search_many([_query(ex) for ex in items], k)
    prompts = [
        with_passages(ex.prompt_messages, passages)
        for ex, passages in zip(items, found, strict=True)
    ]
    return prompts, found
