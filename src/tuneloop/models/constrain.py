"""Grammar-constrained decoding: answers that are JSON valid under a JSON Schema, untrained.

At every step of `model.generate` a logits processor sets to -inf each token that cannot
continue a JSON text valid under the schema, so greedy or sampled, the answer has the shape.
The end-of-turn token is allowed only once the object is complete, and then nothing else is,
so the answer stops there. The grammar engine is llguidance, picked by measurement over
xgrammar, outlines and lm-format-enforcer (bench/structured/pick.py).

A worked example on the embedded model (`generate` takes the constraint for every prompt):

    from tuneloop.models.constrain import JsonConstraint
    from tuneloop.models.generate import generate
    from tuneloop.models.load import load

    model, tok, _ = load("smollm2-135m-instruct")
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
              "population": {"type": "integer", "minimum": 0, "maximum": 100000000}},
              "required": ["city", "population"], "additionalProperties": False}
    chat = [{"role": "user", "content": "What is the capital of France? Answer in JSON."}]
    generate(model, tok, [chat], max_new_tokens=48, constraint=JsonConstraint(tok, schema))
    # ['{"city": "Paris", "population": 11111111}']: the shape is sure, the facts are the model's

Or with `model.generate` directly, every row of the batch under the same constraint:

    out = model.generate(**inputs, logits_processor=[constraint.logits_processor(batch_size)])

and rows under different constraints, or none, in one batch: `rows_processor([c1, None, c2])`.

`JsonConstraint(tok, None)` is OpenAI's `{"type": "json_object"}`: any JSON object.
`from_response_format` reads an OpenAI `response_format`. Answers are one line, with the
separators `json.dumps` writes (`", "` and `": "`): no blank lines or indentation to spend the
token budget on.

What the constraint cannot do: make a small model stop inside an unbounded field. A 135M
model can repeat a digit or a word forever in an `integer` or a `string`, and the answer is
then cut by `max_new_tokens` and does not parse. Bounds in the schema (`maxLength`,
`maximum`, `maxItems`, `enum`) keep every answer finite.

`GrammarConstraint(tok, lark)` is the general form: answers in the language of a grammar in
llguidance's Lark dialect, where `%json {...}` embeds a JSON Schema (tool calls,
`tuneloop.serve.tools`). Both kinds share the machinery below and one interface: `matcher()`,
`stops`, `vocab`, `cache_key`, `logits_processor(batch_size)` and `rows_processor([...])`.

The grammar for a (tokenizer, schema or grammar) pair is compiled once and kept
(`compiled_count` counts compilations); the tokenizer's own preparation (about half a second
for a 49k vocabulary) is kept per tokenizer. llguidance is imported inside the functions that
need it.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from tuneloop.errors import UserError

ENGINE = "llguidance"
# One line, json.dumps's separators: `{"a": 1, "b": [2, 3]}`.
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
ANY_OBJECT: dict = {"type": "object"}
KEEP_GRAMMARS = 256  # compiled grammars kept, least recently used dropped first

_lock = threading.Lock()
_tokenizers: dict[str, Any] = {}  # tokenizer fingerprint -> llguidance tokenizer
_grammars: OrderedDict[tuple[str, str], Any] = OrderedDict()  # -> compiled matcher (template)
_compiled = 0


def compiled_count() -> int:
    """How many grammars this process has compiled (a cached one is not compiled again)."""
    return _compiled


class Constraint:
    """What every constraint shares: the tokenizer's stop tokens (`stops`) and vocabulary size
    (`vocab`), the compiled matcher a fresh copy of which starts each answer (`matcher()`), and
    the logits processor. Subclasses say what the grammar is (`JsonConstraint`,
    `GrammarConstraint`) and what besides the prompt decides an answer (`cache_key`)."""

    stops: list[int]
    vocab: int

    def _prepare(
        self, tokenizer, grammar: str, where: str, problem: Callable[[str], UserError]
    ) -> None:
        """Compile `grammar` (llguidance's grammar text) for `tokenizer`, or take it from the
        cache; `problem(error)` is the `UserError` for a grammar that does not compile."""
        from tuneloop.models.generate import stop_token_ids

        self.stops = stop_token_ids(tokenizer)
        ll_tokenizer, fingerprint = _tokenizer(tokenizer, self.stops, where)
        self.vocab = ll_tokenizer.vocab_size
        self._template = _compile(ll_tokenizer, fingerprint, grammar, problem)

    @property
    def cache_key(self) -> dict:
        raise NotImplementedError

    def matcher(self):
        """A fresh matcher at the start of an answer (a copy of the compiled template)."""
        return self._template.deep_copy()

    def logits_processor(self, batch_size: int) -> RowsProcessor:
        """For `model.generate(..., logits_processor=[...])`: every one of `batch_size` rows
        under this constraint. One processor per `generate` call: it keeps each row's state."""
        return rows_processor([self] * batch_size)


class JsonConstraint(Constraint):
    """Answers that are JSON valid under `schema` (None: any JSON object, OpenAI's
    `json_object` mode) for `tokenizer`'s model. `where` names the setting the schema came
    from (`response_format`, `task.json_schema`) in the `UserError` an invalid schema raises.

    Compiled when made (or taken from the cache); `logits_processor` is cheap, one per batch.
    """

    def __init__(self, tokenizer, schema: dict | None = None, where: str = "response_format"):
        self.schema = schema
        self.where = where
        if schema is not None:
            check_schema(schema, where)
        chosen = ANY_OBJECT if schema is None else schema
        self._prepare(
            tokenizer, json_grammar(chosen), where, lambda e: _schema_problem(e, chosen, where)
        )

    @property
    def cache_key(self) -> dict:
        """What decides a constrained answer besides the prompt and the model: the schema, the
        engine and its version, the output format. `generate` puts it in its cache key."""
        import llguidance

        schema = None if self.schema is None else json.dumps(self.schema)  # in its key order
        return {"json_schema": schema, "engine": f"{ENGINE} {llguidance.__version__}",
                "format": JSON_OPTIONS}  # fmt: skip


class GrammarConstraint(Constraint):
    """Answers in the language of `lark`, a grammar in llguidance's Lark dialect (its `%json
    {...}` embeds a JSON Schema; give it `"x-guidance": JSON_OPTIONS` for json.dumps's
    one-line spelling). `where` names the setting the grammar came from in the `UserError` a
    grammar that does not compile raises.

        city = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
                "required": ["city"], "x-guidance": JSON_OPTIONS}
        lark = f'start: "No." | "Yes: " %json {json.dumps(city)}'
        generate(model, tok, [chat], constraint=GrammarConstraint(tok, lark, "answer"))
        # ['No.'], or 'Yes: ' and such an object: nothing else
    """

    def __init__(self, tokenizer, lark: str, where: str):
        import llguidance

        self.lark = lark
        self.where = where
        grammar = llguidance.LLMatcher.grammar_from_lark(lark)
        self._prepare(tokenizer, grammar, where, lambda e: _grammar_problem(e, lark, where))

    @property
    def cache_key(self) -> dict:
        """What decides a constrained answer besides the prompt and the model: the grammar
        (its embedded schemas carry their output format), the engine and its version."""
        import llguidance

        return {"lark_grammar": self.lark, "engine": f"{ENGINE} {llguidance.__version__}"}


def rows_processor(constraints: list[Constraint | None]) -> RowsProcessor:
    """A logits processor where row i of the batch is under `constraints[i]`, or free where it
    is None. All constraints must be for the same tokenizer."""
    made = [c for c in constraints if c is not None]
    stops, vocab = (made[0].stops, made[0].vocab) if made else ([], 0)
    return RowsProcessor([c.matcher() if c else None for c in constraints], stops, vocab)


def from_response_format(
    tokenizer, response_format: dict | None, where: str = "response_format"
) -> JsonConstraint | None:
    """The constraint an OpenAI `response_format` asks for; None for text."""
    kind, schema = response_format_schema(response_format, where)
    return None if kind == "text" else JsonConstraint(tokenizer, schema, where)


def response_format_schema(
    response_format: dict | None, where: str = "response_format"
) -> tuple[str, dict | None]:
    """The kind (`text`, `json_object`, `json_schema`) and the schema of an OpenAI
    `response_format`; a malformed one is a `UserError` at `where`.

        >>> response_format_schema({"type": "json_object"})
        ('json_object', None)
        >>> response_format_schema({"type": "json_schema", "json_schema": {
        ...     "name": "city", "strict": True, "schema": {"type": "object"}}})
        ('json_schema', {'type': 'object'})
        >>> response_format_schema({"type": "xml"})
        Traceback (most recent call last):
        ...
        tuneloop.errors.UserError: response_format.type: unknown response format 'xml'
          fix: use "text", "json_object", or "json_schema" with {"json_schema": {"schema": {...}}}
    """
    if response_format is None:
        return "text", None
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind in ("text", "json_object"):
        return kind, None
    if kind != "json_schema":
        raise UserError(
            f"unknown response format {kind!r}",
            f"{where}.type",
            'use "text", "json_object", or "json_schema" with {"json_schema": {"schema": {...}}}',
        )
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if not isinstance(schema, dict):
        raise UserError(
            f"json_schema mode needs a schema object, got {json.dumps(spec)[:200]}",
            f"{where}.json_schema.schema",
            'give {"type": "json_schema", "json_schema": {"name": "...", "schema": {...}}}',
        )
    return kind, schema


# -- compiling ---------------------------------------------------------------------------------


def check_schema(schema: Any, where: str) -> None:
    """A `UserError` unless `schema` is a valid JSON Schema (checked against its metaschema).

    >>> check_schema({"type": "object", "properties": {"n": {"type": "int"}}}, "task.json_schema")
    Traceback (most recent call last):
    ...
    tuneloop.errors.UserError: task.json_schema: not a valid JSON Schema at $.properties.n.type: \
'int' is not valid under any of the given schemas
      fix: correct the schema (types are string, integer, number, boolean, object, array, null)
    """
    import jsonschema

    if not isinstance(schema, dict):
        raise UserError(
            f"a JSON Schema is an object, got {json.dumps(schema, default=str)[:200]}",
            where,
            'give an object such as {"type": "object", "properties": {"name": '
            '{"type": "string"}}, "required": ["name"]}',
        )
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as e:
        raise UserError(
            f"not a valid JSON Schema at {e.json_path}: {e.message}",
            where,
            "correct the schema (types are string, integer, number, boolean, object, array, null)",
        ) from None


def check_compiles(schema: dict, where: str) -> None:
    """A `UserError` unless llguidance can compile `schema` (checked without a tokenizer, so
    cheap: a schema using keys it does not implement is refused before any compiling).

    >>> check_compiles({"type": "object", "properties": {"n": {"not": {}}}}, "tools[0]")
    Traceback (most recent call last):
    ...
    tuneloop.errors.UserError: tools[0]: constrained decoding (llguidance) cannot compile the \
JSON Schema: Unimplemented keys: ["not"]; schema: {"type": "object", ...}
      fix: correct that part. These compile: ...
    """
    import llguidance

    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(json_grammar(schema))
    if is_error:
        raise _schema_problem(messages[0], schema, where)


def json_grammar(schema: dict) -> str:
    """llguidance's grammar text for answers valid under `schema`, spelled as JSON_OPTIONS say."""
    import llguidance

    # not sorted: the answer's keys come in the order the schema lists its properties
    return llguidance.LLMatcher.grammar_from_json_schema(json.dumps(schema), defaults=JSON_OPTIONS)


def _schema_problem(error: str, schema: dict, where: str) -> UserError:
    return UserError(
        f"constrained decoding ({ENGINE}) cannot compile the JSON Schema: {error[:300]}; "
        f"schema: {json.dumps(schema)[:300]}",
        where,
        "correct that part. These compile: type, properties, required, "
        "additionalProperties, enum, const, items, prefixItems, min/maxItems, "
        "min/maxLength, pattern, format, minimum/maximum, anyOf/oneOf/allOf, $ref to $defs; "
        "these do not: not, if/then/else, dependentRequired, remote $ref",
    )


def _grammar_problem(error: str, lark: str, where: str) -> UserError:
    return UserError(
        f"constrained decoding ({ENGINE}) cannot compile the grammar: {error[:300]}; "
        f"grammar: {lark[:300]}",
        where,
        "correct the grammar (llguidance's Lark dialect: https://github.com/guidance-ai/"
        "llguidance/blob/main/docs/syntax.md)",
    )


def _compile(ll_tokenizer, fingerprint: str, grammar: str, problem: Callable[[str], UserError]):
    """The compiled matcher for (tokenizer, grammar), from the cache when there; a grammar
    that does not compile raises `problem(error)`."""
    global _compiled
    import llguidance

    key = (fingerprint, grammar)
    with _lock:
        if key in _grammars:
            _grammars.move_to_end(key)
            return _grammars[key]
    matcher = llguidance.LLMatcher(ll_tokenizer, grammar, log_level=0)
    if matcher.is_error():
        raise problem(matcher.get_error())
    with _lock:
        _grammars[key] = matcher
        _compiled += 1
        while len(_grammars) > KEEP_GRAMMARS:
            _grammars.popitem(last=False)
    return matcher


def _tokenizer(tokenizer, stops: list[int], where: str) -> tuple[Any, str]:
    """llguidance's view of `tokenizer` (its vocabulary as bytes, the stop tokens), made once
    per tokenizer, and the tokenizer's fingerprint."""
    import llguidance.hf

    from tuneloop.models.generate import tokenizer_fingerprint

    fingerprint = f"{tokenizer_fingerprint(tokenizer)}:{stops}"
    with _lock:
        if fingerprint in _tokenizers:
            return _tokenizers[fingerprint], fingerprint
    try:
        made = llguidance.hf.from_tokenizer(tokenizer, n_vocab=len(tokenizer), eos_token=stops)
    except ValueError as e:
        raise UserError(
            f"constrained decoding cannot read this model's tokenizer: {e}",
            where,
            "use a model whose tokenizer has a tokenizer.json (a fast tokenizer)",
        ) from None
    with _lock:
        _tokenizers[fingerprint] = made
    return made, fingerprint


# -- masking -----------------------------------------------------------------------------------


class RowsProcessor:
    """A `transformers` logits processor: each step, feed every constrained row the token it
    chose last, then set to -inf each logit its matcher does not allow. A row that chose a
    stop token is finished (transformers pads it from then on) and is left alone, as is a row
    without a matcher."""

    def __init__(self, matchers: list, stops: list[int], vocab: int):
        import torch

        self.matchers = matchers
        self.stops = set(stops)
        self.finished = [m is None for m in matchers]
        self.started = False
        # (B, ceil(V/32)) int32: bit j of word w allows token 32*w + j; all set for free rows
        self.bitmask = torch.full((len(matchers), (vocab + 31) // 32), -1, dtype=torch.int32)

    def __call__(self, input_ids, scores):
        last = input_ids[:, -1].tolist() if self.started else []  # (B,)
        self.started = True
        for row, matcher in enumerate(self.matchers):
            if self.finished[row]:
                continue
            if last and last[row] in self.stops:
                self.finished[row] = True
                self.bitmask[row] = -1
                continue
            if last:
                matcher.consume_token(last[row])  # allowed by the last mask, so accepted
            self._fill(matcher, row)
        if not all(self.finished):  # finished rows are padded whatever they choose
            _apply_bitmask(scores, self.bitmask)
        return scores

    def _fill(self, matcher, row: int) -> None:
        """The row's allowed tokens into its bitmask; only the stop tokens when the matcher is
        stuck (an error, or a schema no answer satisfies), so the row ends instead of running
        on with every token forbidden."""
        v = self.bitmask[row]
        matcher.unsafe_compute_mask_ptr(v.data_ptr(), v.numel() * v.element_size())
        if matcher.is_error() or not bool(v.any()):
            v.zero_()
            for stop in self.stops:
                v[stop // 32] |= _bit(stop % 32)


def _bit(j: int) -> int:
    """Bit j of an int32 word, as a Python int torch accepts (bit 31 is the sign)."""
    return -(1 << 31) if j == 31 else 1 << j


def _apply_bitmask(scores, bitmask) -> None:
    """Set to -inf, in place, each logit (B, V) whose bit is 0 in `bitmask` (B, W) int32: the
    little-endian bytes, unpacked least significant bit first, are the tokens in order. Logits
    past the tokenizer's vocabulary (a model's padded embedding rows) are never allowed."""
    import numpy as np
    import torch

    bits = np.unpackbits(bitmask.numpy().view(np.uint8), axis=1, bitorder="little")
    width = min(bits.shape[1], scores.shape[1])
    allowed = torch.from_numpy(bits[:, :width].view(np.bool_)).to(scores.device)  # (B, width)
    scores[:, :width].masked_fill_(~allowed, float("-inf"))
    scores[:, width:] = float("-inf")
