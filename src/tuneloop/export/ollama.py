"""An Ollama Modelfile that prompts the exported GGUF exactly as the model was trained.

Ollama's TEMPLATE is a Go template, not the Jinja chat template a Hugging Face tokenizer carries,
so the Jinja template is reduced to literal text around each message (`ChatFormat`), checked to
render every probe conversation exactly as the Jinja template does, and written as Go. With
SmolLM2's ChatML template:

    {{ range $i, $m := .Messages }}{{ if and (eq $i 0) (ne $m.Role "system") }}<|im_start|>system
    You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>
    {{ end }}{{ if eq $m.Role "system" }}<|im_start|>system
    {{ $m.Content }}<|im_end|>
    ...{{ end }}{{ end }}<|im_start|>assistant

The run's task instruction becomes the Modelfile's SYSTEM (Ollama sends it when a chat has no
system message, as tuneloop does), the template's end-of-turn tokens become `stop` parameters, and
the temperature is 0: the greedy decoding the run was evaluated with.
"""

from __future__ import annotations

from dataclasses import dataclass

from tuneloop.errors import UserError

ROLES = ("system", "user", "assistant")
_MARK = {"system": "SYSXQ7", "user": "USRXQ7", "assistant": "ASTXQ7"}


@dataclass(frozen=True)
class ChatFormat:
    """A chat template as literal text: `prefix[role] + content + suffix[role]` per message,
    `missing_system` before a chat that does not open with a system message, and `generation`
    to open the assistant's turn."""

    prefix: dict[str, str]
    suffix: dict[str, str]
    missing_system: str
    generation: str

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        out = "" if messages and messages[0]["role"] == "system" else self.missing_system
        for m in messages:
            out += self.prefix[m["role"]] + m["content"] + self.suffix[m["role"]]
        return out + (self.generation if add_generation_prompt else "")

    def go_template(self) -> str:
        """The same rendering as an Ollama (Go text/template) TEMPLATE."""
        parts = ["{{ range $i, $m := .Messages }}"]
        if self.missing_system:
            parts.append(
                '{{ if and (eq $i 0) (ne $m.Role "system") }}'
                f"{_go_text(self.missing_system)}{{{{ end }}}}"
            )
        for n, role in enumerate(ROLES):
            keyword = "if" if n == 0 else "else if"
            parts.append(
                f'{{{{ {keyword} eq $m.Role "{role}" }}}}{_go_text(self.prefix[role])}'
                f"{{{{ $m.Content }}}}{_go_text(self.suffix[role])}"
            )
        parts.append("{{ end }}{{ end }}")
        parts.append(_go_text(self.generation))
        return "".join(parts)


def _go_text(text: str) -> str:
    """Literal text inside a Go template (only `{{` needs escaping)."""
    return text.replace("{{", '{{ "{{" }}')


def chat_format(tokenizer, probes: list[list[dict[str, str]]] | None = None) -> ChatFormat:
    """Reduce the tokenizer's chat template to a `ChatFormat`, checked against the template on
    built-in conversations and on `probes`; refuse a template that does not reduce."""

    def render(messages, gen=False):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)

    def msg(role):
        return {"role": role, "content": _MARK[role]}

    s, u, a = msg("system"), msg("user"), msg("assistant")
    try:
        one = render([s])  # pre_s S suf_s
        two = render([s, u])  # one + pre_u U suf_u
        three = render([s, u, a])  # two + pre_a A suf_a
        generation = render([s, u], gen=True)[len(two) :]
        lone = render([u])  # missing_system + pre_u U suf_u
    except Exception as exc:  # a template that refuses one of the probe shapes
        raise _refuse(f"rendering probe chats failed: {exc}") from None
    if not (two.startswith(one) and three.startswith(two)):
        raise _refuse("a message renders differently depending on what follows it")
    pre_s, _, suf_s = one.partition(_MARK["system"])
    pre_u, _, suf_u = two[len(one) :].partition(_MARK["user"])
    pre_a, _, suf_a = three[len(two) :].partition(_MARK["assistant"])
    user = pre_u + _MARK["user"] + suf_u
    if not lone.endswith(user):
        raise _refuse("a chat without a system message renders its user turn differently")
    missing_system = lone[: len(lone) - len(user)]
    fmt = ChatFormat(
        prefix={"system": pre_s, "user": pre_u, "assistant": pre_a},
        suffix={"system": suf_s, "user": suf_u, "assistant": suf_a},
        missing_system=missing_system,
        generation=generation,
    )
    checks = [
        [{"role": "user", "content": "Hello there"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"},
        ],
        *(probes or []),
    ]
    for chat in checks:
        for gen in (True, False):
            if fmt.render(chat, gen) != render(chat, gen):
                raise _refuse(f"it renders {chat!r} differently from the literal reduction")
    return fmt


def _refuse(why: str) -> UserError:
    return UserError(
        f"the chat template cannot be written as an Ollama TEMPLATE: {why}",
        "--ollama",
        "write the TEMPLATE by hand; the GGUF file still carries the Jinja template",
    )


def modelfile(gguf_name: str, fmt: ChatFormat, stops: list[str], system: str | None) -> str:
    """The Modelfile text: the GGUF beside it, the template, the stops, greedy decoding."""
    for text in (fmt.go_template(), system or ""):
        if '"""' in text:
            raise _refuse('the text holds `"""`, which a Modelfile cannot quote')
    lines = [f"FROM ./{gguf_name}", f'TEMPLATE """{fmt.go_template()}"""']
    if system:
        lines.append(f'SYSTEM """{system}"""')
    lines += [f'PARAMETER stop "{s}"' for s in stops]
    lines.append("PARAMETER temperature 0")
    return "\n".join(lines) + "\n"
