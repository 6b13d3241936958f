"""The OpenAI request bodies the server accepts, and its OpenAI-style error answers.

A mistake in a request is answered with a 4xx status and a body clients already understand:

    {"error": {"message": "model `nope` is not served here; served: __base__, support",
               "type": "invalid_request_error", "param": "model", "code": "model_not_found"}}

A JSON `response_format` (`json_object`, `json_schema`) is enforced by grammar-constrained
decoding; `n`, `seed`, the penalties, `logit_bias`, `logprobs`/`top_logprobs`, tools and, on
/v1/completions, prompt lists and token-id prompts are honoured. Fields the server cannot honour
(`best_of` > 1, `suffix`, `echo`) are refused with a 400 naming the field rather than silently
ignored; only fields that change nothing in the answer (`user`, `metadata`, `store` ...) are
accepted and unused.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class RequestError(Exception):
    """A request the server refuses; rendered as `{"error": {...}}` with `status`."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        type: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.headers = headers
        self.status, self.message, self.param, self.code, self.type = (
            status,
            message,
            param,
            code,
            type,
        )

    def body(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


MAX_CHOICES = 16  # n, and prompts x n on /v1/completions


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(0.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1, le=MAX_CHOICES)
    seed: int | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    stop: str | list[str] | None = None
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    best_of: int | None = None

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _bias(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for key, bias in (value or {}).items():
            if not key.isdigit():
                raise ValueError(f"keys are token ids; got {key!r}")
            if not -100 <= bias <= 100:
                raise ValueError(f"biases are between -100 and 100; got {bias} for {key}")
        return value

    @property
    def stops(self) -> list[str]:
        if self.stop is None:
            return []
        return [s for s in ([self.stop] if isinstance(self.stop, str) else self.stop) if s]

    @property
    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))

    def settings(self) -> dict:
        """What each choice's `Job` takes from the body besides the prompt."""
        return {
            "seed": self.seed,
            "frequency_penalty": self.frequency_penalty,
            "presence_penalty": self.presence_penalty,
            "logit_bias": {int(k): v for k, v in (self.logit_bias or {}).items()},
            "logprobs": self.logprobs_wanted,
            "top_logprobs": self.top_wanted,
        }

    def refuse_unsupported(self) -> None:
        if self.best_of not in (None, 1):
            raise _unsupported("best_of", "send 1 or leave it out; n > 1 returns every choice")


def _unsupported(field: str, fix: str) -> RequestError:
    return RequestError(400, f"{field} is not supported: {fix}", field, "unsupported_parameter")


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    name: str | None = None

    def text(self) -> str:
        """The content as one string; a list of parts must hold text parts only."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        texts = []
        for part in self.content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise RequestError(
                    400, "only text content parts are supported", "messages", "unsupported_content"
                )
            texts.append(part["text"])
        return "".join(texts)


class ChatRequest(_Body):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list[Any] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool = True
    response_format: dict[str, Any] | None = None

    def refuse_unsupported(self) -> None:
        super().refuse_unsupported()
        if self.top_logprobs and not self.logprobs:
            raise RequestError(
                400, "top_logprobs needs logprobs: true", "top_logprobs", "invalid_value"
            )
        if not self.tools and self.tool_choice not in (None, "none", "auto"):
            raise RequestError(
                400, "tool_choice names a tool, but the request offers no tools", "tool_choice",
                "invalid_value",
            )  # fmt: skip
        if self.tools and self.response_format and self.response_format.get("type") != "text":
            raise _unsupported("response_format", "with tools, leave response_format out")

    @property
    def logprobs_wanted(self) -> bool:
        return self.logprobs

    @property
    def top_wanted(self) -> int:
        return self.top_logprobs or 0

    @property
    def limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_Body):
    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool = False
    suffix: str | None = None

    def refuse_unsupported(self) -> None:
        super().refuse_unsupported()
        if self.suffix:
            raise _unsupported("suffix", "fill-in-the-middle is not supported; leave it out")
        if self.echo:
            raise RequestError(400, "echo is not supported", "echo", "unsupported_parameter")
        prompts = self.prompts()
        if not prompts:
            raise RequestError(400, "the prompt list is empty", "prompt", "invalid_value")
        if len(prompts) * self.n > MAX_CHOICES:
            raise RequestError(
                400,
                f"{len(prompts)} prompts x n={self.n} choices is more than {MAX_CHOICES} answers "
                "in one request",
                "prompt",
                "invalid_value",
            )

    @property
    def logprobs_wanted(self) -> bool:
        return self.logprobs is not None

    @property
    def top_wanted(self) -> int:
        return self.logprobs or 0

    @property
    def limit(self) -> int | None:
        return self.max_tokens

    def prompts(self) -> list[str | list[int]]:
        """Each prompt, text or token ids: a string, a list of strings, a list of token ids
        (one prompt) or a list of such lists."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if p and all(isinstance(x, int) for x in p):
            return [list(p)]
        return list(p)


class LoadAdapterRequest(BaseModel):
    """vLLM's `POST /v1/load_lora_adapter` body."""

    model_config = ConfigDict(extra="ignore")

    lora_name: str = Field(min_length=1)
    lora_path: str = Field(min_length=1)

    def refuse_unsupported(self) -> None:
        pass


class UnloadAdapterRequest(BaseModel):
    """vLLM's `POST /v1/unload_lora_adapter` body."""

    model_config = ConfigDict(extra="ignore")

    lora_name: str = Field(min_length=1)

    def refuse_unsupported(self) -> None:
        pass


def parse_body(model: type[BaseModel], raw: bytes) -> Any:
    """Validate a JSON body into `model`, or raise a 400 `RequestError` naming the field."""
    try:
        body = model.model_validate_json(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        if err["type"] == "json_invalid":
            raise RequestError(
                400, f"the body is not valid JSON: {err['msg']}", None, "invalid_json"
            ) from None
        param = ".".join(str(p) for p in err["loc"]) or None
        raise RequestError(400, f"{param}: {err['msg']}", param, "invalid_value") from None
    body.refuse_unsupported()
    return body
