"""The OpenAI request bodies the server accepts, and its OpenAI-style error answers.

A mistake in a request is answered with a 4xx status and a body clients already understand:

    {"error": {"message": "model `nope` is not served here; served: __base__, support",
               "type": "invalid_request_error", "param": "model", "code": "model_not_found"}}

A JSON `response_format` (`json_object`, `json_schema`) is enforced by grammar-constrained
decoding. Fields the server cannot honour (`n` > 1, tools, log-probabilities, `best_of`,
`suffix`, penalties, `logit_bias`) are refused with a 400 naming the field
rather than silently ignored; only fields that change nothing in the answer (`user`,
`metadata`, `seed` ...) are accepted and unused.
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
    ):
        super().__init__(message)
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


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(0.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = 1
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    stop: str | list[str] | None = None
    logprobs: bool | int | None = None
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None
    best_of: int | None = None

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences")
        return value

    @property
    def stops(self) -> list[str]:
        if self.stop is None:
            return []
        return [s for s in ([self.stop] if isinstance(self.stop, str) else self.stop) if s]

    @property
    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))

    def refuse_unsupported(self) -> None:
        if self.n != 1:
            raise RequestError(400, "only n=1 is supported", "n", "unsupported_parameter")
        if self.logprobs:
            raise RequestError(
                400, "logprobs are not supported", "logprobs", "unsupported_parameter"
            )
        for name in ("frequency_penalty", "presence_penalty"):
            if getattr(self, name):
                raise _unsupported(name, "penalties are not applied here; send 0 or leave it out")
        if self.logit_bias:
            raise _unsupported("logit_bias", "leave it out")
        if self.best_of not in (None, 1):
            raise _unsupported("best_of", "send 1 or leave it out")


def _unsupported(field: str, fix: str) -> RequestError:
    return RequestError(400, f"{field} is not supported: {fix}", field, "unsupported_parameter")


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]]

    def text(self) -> str:
        """The content as one string; a list of parts must hold text parts only."""
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
    tools: list[Any] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None

    def refuse_unsupported(self) -> None:
        super().refuse_unsupported()
        if self.tools:
            raise RequestError(400, "tools are not supported", "tools", "unsupported_parameter")
        if self.tool_choice not in (None, "none", "auto"):
            raise _unsupported("tool_choice", "no tools are served; leave it out")

    @property
    def limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def chat(self) -> list[dict[str, str]]:
        """Messages in the canonical form; OpenAI's `developer` role is a system message."""
        return [
            {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            for m in self.messages
        ]


class CompletionRequest(_Body):
    prompt: str | list[str]
    echo: bool = False
    suffix: str | None = None

    def refuse_unsupported(self) -> None:
        super().refuse_unsupported()
        if self.suffix:
            raise _unsupported("suffix", "fill-in-the-middle is not supported; leave it out")
        if self.echo:
            raise RequestError(400, "echo is not supported", "echo", "unsupported_parameter")
        if isinstance(self.prompt, list) and len(self.prompt) != 1:
            raise RequestError(
                400, "send one prompt per request", "prompt", "unsupported_parameter"
            )

    @property
    def limit(self) -> int | None:
        return self.max_tokens

    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


def parse_body(model: type[_Body], raw: bytes) -> Any:
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
