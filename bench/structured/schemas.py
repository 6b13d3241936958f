"""A deterministic set of JSON Schemas, and chat prompts asking for an object of each.

    >>> items = schema_set(3, seed=0)
    >>> [sorted(item["schema"]) for item in items][0]
    ['additionalProperties', 'properties', 'required', 'type']
    >>> items == schema_set(3, seed=0)
    True

Every schema is an object of 2 to 5 fields drawn from string (half with `maxLength`), integer
(some bounded), number, boolean, enum, array (of strings or integers, `maxItems`) and a nested
object of two fields; at least one key is required and no other keys are allowed
(`additionalProperties: false`, as OpenAI's `strict: true` asks). The sizes keep a sensible
answer within 64 new tokens, so a constrained answer that does not end is the library's
fault or the model's, not the budget's.
"""

from __future__ import annotations

import json
import random

TOPICS = {
    "book": ["title", "author", "year", "pages", "genre", "rating", "in_print", "tags"],
    "city": ["name", "country", "population", "area_km2", "capital", "founded", "districts"],
    "recipe": ["dish", "servings", "minutes", "vegetarian", "cuisine", "steps", "calories"],
    "ticket": ["subject", "priority", "status", "customer", "opened", "urgent", "labels"],
    "planet": ["name", "moons", "mass", "habitable", "kind", "radius_km", "rings"],
    "employee": ["name", "age", "team", "salary", "remote", "role", "skills"],
    "product": ["name", "price", "stock", "category", "discontinued", "sku", "colors"],
    "movie": ["title", "director", "year", "minutes", "genre", "awards", "cast"],
}
ENUMS = [
    ["low", "medium", "high"],
    ["open", "closed", "pending"],
    ["red", "green", "blue"],
    ["small", "large"],
    ["yes", "no", "maybe"],
]
KINDS = ["string", "string", "integer", "number", "boolean", "enum", "array", "object"]


def field_schema(kind: str, rng: random.Random) -> dict:
    """One property's schema of the given kind."""
    if kind == "string":
        return {"type": "string", "maxLength": 24} if rng.random() < 0.5 else {"type": "string"}
    if kind == "integer":
        return (
            {"type": "integer", "minimum": 0, "maximum": 1000}
            if rng.random() < 0.5
            else {"type": "integer"}
        )
    if kind == "number":
        return {"type": "number"}
    if kind == "boolean":
        return {"type": "boolean"}
    if kind == "enum":
        return {"type": "string", "enum": rng.choice(ENUMS)}
    if kind == "array":
        item = rng.choice([{"type": "string", "maxLength": 12}, {"type": "integer"}])
        return {"type": "array", "items": item, "maxItems": 3}
    inner = {"label": {"type": "string", "maxLength": 16}, "value": {"type": "integer"}}
    return {"type": "object", "properties": inner, "required": ["label", "value"],
            "additionalProperties": False}  # fmt: skip


def object_schema(topic: str, rng: random.Random) -> dict:
    """An object of 2 to 5 of the topic's fields, at least one required."""
    names = rng.sample(TOPICS[topic], rng.randint(2, 5))
    properties = {name: field_schema(rng.choice(KINDS), rng) for name in names}
    required = [n for n in names if rng.random() < 0.7] or [names[0]]
    return {"type": "object", "properties": properties, "required": required,
            "additionalProperties": False}  # fmt: skip


def prompt(topic: str, schema: dict) -> list[dict[str, str]]:
    """The chat asking for one object of `schema` about a `topic`."""
    return [
        {"role": "system", "content": "Reply with one JSON object and nothing else."},
        {"role": "user", "content": f"Describe a {topic} as JSON matching this schema: "
                                    f"{json.dumps(schema)}"},
    ]  # fmt: skip


def bound(schema: dict) -> dict:
    """The schema with a bound on every field that has none: strings at most 24 characters,
    integers and numbers within [0, 100000]. Nothing is left where a model could write on
    forever, except a number's fraction digits.

        >>> bound({"type": "object", "properties": {"n": {"type": "integer"}}})["properties"]
        {'n': {'type': 'integer', 'minimum': 0, 'maximum': 100000}}
    """
    out = dict(schema)
    kind = out.get("type")
    if kind == "string" and "enum" not in out:
        out.setdefault("maxLength", 24)
    if kind in ("integer", "number") and "maximum" not in out:
        out.update(minimum=0, maximum=100000)
    if "items" in out:
        out["items"] = bound(out["items"])
    if "properties" in out:
        out["properties"] = {k: bound(v) for k, v in out["properties"].items()}
    return out


def schema_set(n: int = 100, seed: int = 0, bounded: bool = False) -> list[dict]:
    """`n` items `{"topic", "schema", "messages"}`, the same for the same seed; `bounded`
    puts a bound on every field (`bound`), the structure staying the same."""
    rng = random.Random(seed)
    topics = sorted(TOPICS)
    items = []
    for i in range(n):
        topic = topics[i % len(topics)]
        schema = object_schema(topic, rng)
        schema = bound(schema) if bounded else schema
        items.append({"topic": topic, "schema": schema, "messages": prompt(topic, schema)})
    return items
