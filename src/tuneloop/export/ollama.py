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

`check_modelfile` then reads the written file back as Ollama parses it and checks what can be
checked without Ollama: FROM names the GGUF written beside it, TEMPLATE is the verified Go
template, SYSTEM the run's instruction, and every PARAMETER a known name with a value of its
type. When the `ollama` binary is on PATH, `ollama create` builds the model from the file and
`ollama show` must report the same template and system message; otherwise the check says that
Ollama itself did not run.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

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


# Ollama's PARAMETER names and the type of their value (its `api.Options`).
PARAMETERS = {
    "stop": str, "temperature": float, "top_k": int, "top_p": float, "min_p": float,
    "num_ctx": int, "num_predict": int, "repeat_last_n": int, "repeat_penalty": float,
    "presence_penalty": float, "frequency_penalty": float, "seed": int, "typical_p": float,
    "num_keep": int, "num_batch": int, "num_gpu": int, "num_thread": int,
}  # fmt: skip
_COMMANDS = ("from", "template", "system", "parameter", "adapter", "license", "message", "requires")


def parse_modelfile(text: str) -> list[tuple[str, str]]:
    """(command, argument) pairs as Ollama's parser reads them: a command word, then a
    triple-quoted string (may span lines), `"..."` (backslash escapes) or the rest of the line;
    `#` lines are comments. An unknown command or an unterminated string is refused."""
    out, i = [], 0
    token = re.compile(r"[ \t]*([A-Za-z]+)[ \t]+")
    while i < len(text):
        if text[i] in " \t\r\n":
            i += 1
            continue
        if text[i] == "#":
            i = text.find("\n", i) + 1 or len(text)
            continue
        m = token.match(text, i)
        if not m or m.group(1).lower() not in _COMMANDS:
            line = text[i : text.find("\n", i) if "\n" in text[i:] else len(text)]
            raise ValueError(f"not a Modelfile command: {line!r}")
        command, i = m.group(1).lower(), m.end()
        if text.startswith('"""', i):
            end = text.find('"""', i + 3)
            if end < 0:
                raise ValueError(f'{command.upper()}: unterminated """ string')
            value, i = text[i + 3 : end], end + 3
        elif text.startswith('"', i) and command != "parameter":
            m = re.compile(r'"((?:[^"\\\n]|\\.)*)"').match(text, i)
            if not m:
                raise ValueError(f"{command.upper()}: unterminated string")
            value, i = re.sub(r"\\(.)", r"\1", m.group(1)), m.end()
        else:
            end = text.find("\n", i)
            end = len(text) if end < 0 else end
            value, i = text[i:end].strip(), end
        out.append((command, value))
    return out


@dataclass
class ModelfileCheck:
    checked: list[str] = field(default_factory=list)
    not_checked: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_modelfile(
    path: Path,
    gguf: Path,
    fmt: ChatFormat,
    system: str | None,
    stops: list[str],
    name: str,
    ollama: str | None = None,
) -> ModelfileCheck:
    """Read the Modelfile at `path` back and check it against what it should hold; run Ollama on
    it when `ollama` (its binary; default: found on PATH) is there."""
    check = ModelfileCheck()
    try:
        commands = parse_modelfile(Path(path).read_text())
    except ValueError as exc:
        check.problems.append(f"the Modelfile does not parse: {exc}")
        return check
    check.checked.append("the Modelfile parses")
    values: dict[str, list[str]] = {}
    for command, value in commands:
        values.setdefault(command, []).append(value)

    froms = values.get("from", [])
    target = (Path(path).parent / froms[0]).resolve() if len(froms) == 1 else None
    if target is None:
        check.problems.append(f"one FROM expected, found {len(froms)}")
    elif target != Path(gguf).resolve() or not target.is_file():
        check.problems.append(f"FROM {froms[0]} is not the written GGUF {gguf}")
    else:
        check.checked.append(f"FROM {froms[0]} is the GGUF written beside it")
    if values.get("template") != [fmt.go_template()]:
        check.problems.append("TEMPLATE is not the Go template checked against the chat template")
    else:
        check.checked.append("TEMPLATE is the Go template checked to render every probe")
    if values.get("system", []) != ([system] if system else []):
        check.problems.append(f"SYSTEM is {values.get('system')}, not the task instruction")
    else:
        check.checked.append("SYSTEM is the task instruction" if system else "no SYSTEM")
    params: dict[str, list[str]] = {}
    for value in values.get("parameter", []):
        key, _, raw = value.partition(" ")
        raw = raw.strip()
        kind = PARAMETERS.get(key.lower())
        if kind is None:
            check.problems.append(f"unknown PARAMETER {key}")
            continue
        if kind is str and len(raw) >= 2 and raw[0] == raw[-1] == '"':
            raw = raw[1:-1]
        try:
            kind(raw)
        except ValueError:
            check.problems.append(f"PARAMETER {key} {raw!r} is not a {kind.__name__}")
            continue
        params.setdefault(key.lower(), []).append(raw)
    if params.get("stop", []) != list(stops) or params.get("temperature") != ["0"]:
        check.problems.append(f"PARAMETERs {params} are not stop {stops} and temperature 0")
    else:
        check.checked.append("PARAMETERs are valid: the end-of-turn stops and temperature 0")

    ollama = ollama or shutil.which("ollama")
    if ollama is None:
        check.not_checked.append(
            "Ollama itself (no `ollama` binary here): the model was not created or run by Ollama"
        )
    elif check.ok:
        _run_ollama(ollama, Path(path), fmt, system, name, check)
    return check


def _run_ollama(ollama: str, path: Path, fmt: ChatFormat, system, name: str, check) -> None:
    """`ollama create` a scratch model from the Modelfile, compare what `ollama show` reports,
    remove the model again."""
    model = f"tuneloop-check-{re.sub(r'[^a-z0-9_.-]', '-', name.lower())}"

    def call(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([ollama, *args], capture_output=True, text=True, timeout=900)

    try:
        made = call("create", model, "-f", str(path))
        if made.returncode != 0:
            check.problems.append(f"`ollama create` failed: {(made.stderr or made.stdout).strip()}")
            return
        try:
            template = call("show", model, "--template").stdout.strip()
            shown_system = call("show", model, "--system").stdout.strip()
        finally:
            call("rm", model)
    except (OSError, subprocess.TimeoutExpired) as exc:
        check.problems.append(f"running {ollama} failed: {exc}")
        return
    if template != fmt.go_template().strip():
        check.problems.append("`ollama show --template` differs from the Modelfile's TEMPLATE")
    elif shown_system != (system or "").strip():
        check.problems.append("`ollama show --system` differs from the task instruction")
    else:
        check.checked.append(
            "`ollama create` built it; `ollama show` reports the same template and system"
        )
        check.not_checked.append("answers generated by Ollama (not compared)")
