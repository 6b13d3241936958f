"""One answer on its way through the engine: its prompt, how its tokens are chosen, and what it
has said so far.

A `Job` is one choice of one request (a request with `n: 3` is three jobs). Each decode step the
engine hands every running job the logits of its next token (`choose_tokens`); the job picks a
token by its own settings, so rows with different temperatures, seeds, penalties, logit biases
and JSON schemas share one batch:

    scores = logits + logit_bias - frequency_penalty * count - presence_penalty * (count > 0)
    scores[forbidden by the grammar] = -inf
    token = argmax(scores)                          temperature 0 (greedy, what eval does)
    token ~ top_p(softmax(scores / temperature))    otherwise, from the job's own generator

`count` is how often each token occurs in the answer so far (OpenAI's definition of the
penalties). Log-probabilities are those of the model's distribution (`log_softmax(logits)`),
before any of these adjustments, as vLLM reports them by default: summed over an answer they are
the log-likelihood `tuneloop eval` computes for that text.

`push` takes the chosen token: it ends the job at a stop token, a stop string or `max_tokens`,
and streams the text that can no longer change.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


@dataclass
class Completion:
    text: str
    finish_reason: str  # "stop" | "length" | "tool_calls" (set by the exchange)
    prompt_tokens: int
    completion_tokens: int
    logprobs: list[dict] | None = None  # one entry per answer token, when asked
    index: int = 0


@dataclass
class Job:
    """One choice of a request. `emit` receives ("delta", str) events while streaming, then
    ("done", Completion) or ("error", Exception); it is called from the worker thread."""

    model: str
    prompt_ids: list[int]
    max_tokens: int
    temperature: float
    top_p: float
    stop: list[str]
    tokenizer: object
    stop_ids: frozenset[int]
    stream: bool = False
    strip: bool = True  # chat answers are stripped of surrounding blanks, as eval strips them
    emit: Callable[[tuple[str, object]], None] | None = None
    constraint: object = None  # a models.constrain constraint (response_format, tools), or None
    seed: int | None = None
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    logprobs: bool = False
    top_logprobs: int = 0
    index: int = 0  # the choice's index in its request
    peft_name: str | None = None  # the row's adapter in a PEFT mixed batch, when not `model`
    virtual: object = None  # a prompt-learning adapter's models.virtual.VirtualTokens
    timeout_s: float | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:24])
    created: float = field(default_factory=time.perf_counter)
    tokens: list[int] = field(default_factory=list)
    token_logprobs: list[dict] = field(default_factory=list)
    sent: str = ""
    finish_reason: str | None = None
    cancelled: bool = False
    first_token_at: float | None = None
    _generator: torch.Generator | None = None
    _grammar: object = None

    @property
    def adapter(self) -> str:
        """The row's name in PEFT's `adapter_names` (`__base__` for the base model and for
        prompt-learning adapters, which change the inputs, not the weights)."""
        return self.peft_name or self.model

    @property
    def done(self) -> bool:
        return self.finish_reason is not None or self.cancelled

    @property
    def plain(self) -> bool:
        """Greedy with nothing to adjust or report: the batch's argmax is this row's token."""
        return (
            self.temperature == 0
            and self.constraint is None
            and not self.logit_bias
            and not self.frequency_penalty
            and not self.presence_penalty
            and not self.logprobs
        )

    def expired(self, now: float) -> bool:
        return self.timeout_s is not None and now - self.created > self.timeout_s

    # ---- choosing the next token --------------------------------------------------------------

    def choose(self, logits: torch.Tensor) -> int:
        """This row's next token from its logits (V,), by the rules in the module docstring."""
        scores = logits.float()
        raw = torch.log_softmax(scores, dim=-1) if self.logprobs else None
        if self.logit_bias or self.frequency_penalty or self.presence_penalty:
            scores = scores.clone()
            for token, bias in self.logit_bias.items():
                if token < scores.numel():
                    scores[token] += bias
            if self.tokens and (self.frequency_penalty or self.presence_penalty):
                seen = torch.tensor(self.tokens, device=scores.device)
                counts = torch.bincount(seen, minlength=scores.numel())[: scores.numel()]
                scores -= self.frequency_penalty * counts + self.presence_penalty * (counts > 0)
        if self.constraint is not None:
            scores = self._constrain(scores)
        token = int(torch.argmax(scores)) if self.temperature == 0 else self._sample(scores)
        if raw is not None and token not in self.stop_ids:
            self.token_logprobs.append(self._logprob_entry(raw, token))
        return token

    def _constrain(self, scores: torch.Tensor) -> torch.Tensor:
        from tuneloop.models.constrain import rows_processor

        if self._grammar is None:
            self._grammar = rows_processor([self.constraint])
        last = torch.tensor([[self.tokens[-1] if self.tokens else 0]])
        return self._grammar(last, scores.clone()[None])[0]

    def _sample(self, scores: torch.Tensor) -> int:
        if self._generator is None:
            self._generator = torch.Generator(device=scores.device)
            if self.seed is None:
                self._generator.seed()
            else:
                self._generator.manual_seed(self.seed)
        probs = torch.softmax(scores / self.temperature, dim=-1)
        if self.top_p < 1:
            ordered, order = torch.sort(probs, descending=True)
            outside = ordered.cumsum(-1) - ordered >= self.top_p  # the first token always stays
            ordered[outside] = 0
            probs = torch.zeros_like(probs).scatter_(0, order, ordered)
        return int(torch.multinomial(probs, 1, generator=self._generator))

    def _logprob_entry(self, logprobs: torch.Tensor, token: int) -> dict:
        entry = {"token_id": token, "logprob": float(logprobs[token])}
        if self.top_logprobs:
            values, ids = torch.topk(logprobs, self.top_logprobs)
            entry["top"] = list(zip(ids.tolist(), values.tolist(), strict=True))
        return entry

    # ---- taking it ----------------------------------------------------------------------------

    def push(self, token: int) -> None:
        """Take the row's next token: stream new text, and finish at a stop or the limit."""
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        if token in self.stop_ids:
            self.finish("stop")
            return
        self.tokens.append(token)
        text, stopped = self._visible(final=False) if self.stream or self.stop else ("", False)
        if stopped:
            self.finish("stop")
        elif len(self.tokens) >= self.max_tokens:
            self.finish("length")
        elif self.stream and len(text) > len(self.sent) and text.startswith(self.sent):
            self._send(("delta", text[len(self.sent) :]))
            self.sent = text

    def finish(self, reason: str) -> None:
        if self.finish_reason is not None:
            return
        self.finish_reason = reason
        text, _ = self._visible(final=True)
        if self.stream and len(text) > len(self.sent) and text.startswith(self.sent):
            self._send(("delta", text[len(self.sent) :]))
            self.sent = text
        logprobs = self.token_logprobs if self.logprobs else None
        done = Completion(text, reason, len(self.prompt_ids), len(self.tokens), logprobs)
        done.index = self.index
        self._send(("done", done))

    def fail(self, error: Exception) -> None:
        if self.finish_reason is None:
            self.finish_reason = "error"
            self._send(("error", error))

    def _send(self, event: tuple[str, object]) -> None:
        if self.emit is not None:
            self.emit(event)

    def _visible(self, final: bool) -> tuple[str, bool]:
        """The answer so far, and whether a stop string ended it.

        Like `tuneloop eval`, the answer is the decoded text stripped of surrounding blanks. While
        streaming, what could still change is held back: trailing blanks, a partly decoded
        character, and an ending that may be the start of a stop string.
        """
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        text = text.lstrip() if self.strip else text
        cuts = [i for i in (text.find(s) for s in self.stop) if i >= 0]
        if cuts:
            text = text[: min(cuts)]
            return (text.rstrip() if self.strip else text), True
        text = text.rstrip() if self.strip else text
        if final:
            return text, False
        text = text.rstrip("\ufffd")
        for s in self.stop:
            for k in range(min(len(s) - 1, len(text)), 0, -1):
                if text.endswith(s[:k]):
                    text = text[:-k]
                    break
        return text, False


def choose_tokens(jobs: list[Job], logits: torch.Tensor) -> list[int]:
    """Each row's next token from the batch's last-position logits (B, V): one argmax for the
    plain greedy rows (and finished rows a static batch still carries), each other row by its
    own settings."""
    greedy = torch.argmax(logits, dim=-1).tolist()  # (B,)
    return [g if job.plain or job.done else job.choose(logits[row]) for row, (job, g) in
            enumerate(zip(jobs, greedy, strict=True))]  # fmt: skip
