r"""Retrieval over the user's documents (`task.knowledge`), for the `rag` rungs.

The documents are read, cut into passages and indexed once; each item then gets its k best
passages put in its last user turn:

    kb = load_knowledge(recipe.task.knowledge, cache_dir)
    prompt = with_passages(item.prompt_messages, kb.search(question, k))

For a base of three small documents:

    >>> ax5 = "# AX5 router\n\nThe AX5 router has 6 ports and ships with firmware 2.4.1."
    >>> returns, hours = "Returns are free for 30 days.", "Support opens at 08:00 on weekdays."
    >>> kb = KnowledgeBase(passages_of("routers/ax5.md", ax5, 200, 40)
    ...                    + passages_of("returns.txt", returns, 200, 40)
    ...                    + passages_of("hours.txt", hours, 200, 40))
    >>> question = [{"role": "system", "content": "Answer briefly."},
    ...             {"role": "user", "content": "How many ports does the AX5 have?"}]
    >>> best = kb.search("How many ports does the AX5 have?", k=1)
    >>> [p.id for p in best]
    ['routers/ax5.md#1']
    >>> print(with_passages(question, best)[-1]["content"])
    Use these passages to answer the question.
    <BLANKLINE>
    [routers/ax5.md#1]
    # AX5 router
    <BLANKLINE>
    The AX5 router has 6 ports and ships with firmware 2.4.1.
    <BLANKLINE>
    Question: How many ports does the AX5 have?
    >>> retrieval_hit({"document": "ax5.md"}, best, "document")
    True

Reading: `.md`, `.markdown` and `.txt` as UTF-8 text; `.html`/`.htm` with the standard
library's parser (script and style dropped, headings kept as `#` lines); `.pdf` with `pypdf`
(`pip install 'tuneloop[rag]'`). Folders are read recursively, in path order; hidden files
and folders (`.git`) are ignored, files of other suffixes are skipped and counted in
`describe()`. A passage's document is its path relative to the folder it was found in (a
file given directly: its name), and its id is `<document>#<n>`, n counting from 1.

Chunking: words are whitespace-separated. A passage holds at most `chunk_words` words and
never crosses documents. When a document is longer, a passage ends before the last heading
that starts in its second half, else before the last paragraph (blank-line separated) that
starts there, and the next passage starts at that heading or paragraph. Only when neither
exists is the text cut after `chunk_words` words, and the next passage then starts
`overlap_words` words before the cut, so the two share them.

Retrieval: `bm25` ranks passages with BM25 (Okapi) over casefolded `\w+` words; `dense`
ranks them by the cosine similarity of a local sentence-transformers model's normalised
embeddings, the passages' embeddings cached as `.npy` in `cache_dir` so that the documents
are embedded once per (embedder, passages). Ties go to the earlier passage.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath

from tuneloop.config import KnowledgeConfig
from tuneloop.errors import UserError

TEXT_SUFFIXES = (".md", ".markdown", ".txt")
HTML_SUFFIXES = (".html", ".htm")
SUFFIXES = (*TEXT_SUFFIXES, *HTML_SUFFIXES, ".pdf")
FIELD = "task.knowledge.paths"
RAG_INSTALL = "pip install 'tuneloop[rag]'"

_TOKEN = re.compile(r"\w+")
_HEADING = re.compile(r"#{1,6}\s")


@dataclass(frozen=True)
class Passage:
    id: str  # "<document>#<n>", n counting from 1 within the document
    document: str  # path relative to the folder it was found in (a file given directly: its name)
    text: str


# ---------------------------------------------------------------------------- reading


class _HTMLText(HTMLParser):
    """The text of an HTML page as markdown-like blocks: `#` headings, one block per
    paragraph-like element, one line per list item or table row (cells split by ` | `)."""

    SKIP = {"script", "style", "noscript", "template", "svg"}
    BLOCKS = {"p", "div", "section", "article", "main", "header", "footer", "nav", "aside"}
    BLOCKS |= {"ul", "ol", "dl", "table", "blockquote", "pre", "figure", "figcaption", "hr"}
    BLOCKS |= {"title", "body", "form"}
    LINES = {"li", "tr", "br", "dt", "dd"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0
        self.first_cell = True

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in self.SKIP:
            self.skipping += 1
        elif re.fullmatch(r"h[1-6]", tag):
            self.parts.append("\n\n" + "#" * int(tag[1]) + " ")
        elif tag in self.BLOCKS:
            self.parts.append("\n\n")
        elif tag in self.LINES:
            self.parts.append("\n- " if tag == "li" else "\n")
            self.first_cell = True
        elif tag in ("td", "th"):
            self.parts.append("" if self.first_cell else " | ")
            self.first_cell = False

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif re.fullmatch(r"h[1-6]", tag) or tag in self.BLOCKS:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(re.sub(r"\s+", " ", data))  # HTML's line breaks are spaces


def html_text(html: str) -> str:
    """The readable text of an HTML page.

    >>> print(html_text("<h2>Ports</h2><script>x=1</script><p>Six <b>LAN</b> ports.</p>"))
    ## Ports
    <BLANKLINE>
    Six LAN ports.
    """
    parser = _HTMLText()
    parser.feed(html)
    parser.close()
    lines = [" ".join(line.split()) for line in "".join(parser.parts).splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _pdf_text(path: Path) -> str:
    try:
        import pypdf
    except ImportError:
        raise UserError(
            f"{path} is a PDF, and reading PDFs needs the `pypdf` package",
            FIELD,
            f"{RAG_INSTALL} (or `pip install pypdf`), or convert the PDF to text",
        ) from None
    try:
        reader = pypdf.PdfReader(path)
        if reader.is_encrypted:
            raise ValueError("it is encrypted")
        return "\n\n".join(page.extract_text() or "" for page in reader.pages)
    except Exception as err:  # pypdf raises many kinds on a broken file
        raise UserError(
            f"cannot read the PDF {path}: {err}", FIELD, "export it again, or convert it to text"
        ) from None


def read_document(path: Path) -> str:
    """The text of one document, by its suffix (`SUFFIXES`)."""
    suffix = path.suffix.casefold()
    if suffix == ".pdf":
        return _pdf_text(path)
    try:
        raw = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(
            f"{path} is not UTF-8 text", FIELD, "save the file as UTF-8, or leave it out"
        ) from None
    except OSError as err:
        raise UserError(
            f"cannot read {path}: {err.strerror}", FIELD, "check the file's permissions"
        ) from None
    return html_text(raw) if suffix in HTML_SUFFIXES else raw


def _is_hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def find_documents(paths: list[Path]) -> tuple[list[tuple[str, Path]], Counter]:
    """(document name, file) for every readable file under `paths`, and the skipped files'
    suffixes counted. A name is the path relative to the folder given, or a file's name."""
    found: dict[str, Path] = {}
    seen: set[Path] = set()
    skipped: Counter = Counter()

    def add(name: str, file: Path) -> None:
        if file.resolve() in seen:
            return
        if name in found:
            raise UserError(
                f"two documents are both named {name!r}: {found[name]} and {file}",
                FIELD,
                "give their common parent folder instead, or rename one of them",
            )
        seen.add(file.resolve())
        found[name] = file

    for path in paths:
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                relative = file.relative_to(path)
                if _is_hidden(relative):
                    continue
                if file.suffix.casefold() in SUFFIXES:
                    add(relative.as_posix(), file)
                else:
                    skipped[file.suffix.casefold() or "(none)"] += 1
        elif path.is_file():
            if path.suffix.casefold() not in SUFFIXES:
                raise UserError(
                    f"{path}: documents of type {path.suffix or '(no suffix)'!r} are not read",
                    FIELD,
                    f"give files ending in {', '.join(SUFFIXES)}, or convert this one to text",
                )
            add(path.name, path)
        else:
            raise UserError(
                f"{path} does not exist",
                FIELD,
                "give the folder or files of the documents (relative to the recipe)",
            )
    return sorted(found.items()), skipped


# ---------------------------------------------------------------------------- chunking


def _words(text: str) -> tuple[list[str], list[str], list[int], list[int]]:
    """The words of a text, the separator printed before each (" ", a line break, or a blank
    line before a new block), and the indices of the words that start a heading line or a
    paragraph (after a blank line, or on the line after a heading)."""
    words: list[str] = []
    seps: list[str] = []
    headings: list[int] = []
    paragraphs: list[int] = []
    new_block = True
    for line in text.splitlines():
        tokens = line.split()
        if not tokens:
            new_block = True
            continue
        heading = bool(_HEADING.match(line.lstrip()))
        if heading:
            headings.append(len(words))
        elif new_block:
            paragraphs.append(len(words))
        line_sep = "\n\n" if heading or new_block else "\n"
        for i, token in enumerate(tokens):
            seps.append(" " if i else line_sep)
            words.append(token)
        new_block = heading
    return words, seps, headings, paragraphs


def _last_between(positions: list[int], lo: int, hi: int) -> int | None:
    """The largest of the sorted `positions` within [lo, hi], if any."""
    i = bisect.bisect_right(positions, hi) - 1
    return positions[i] if i >= 0 and positions[i] >= lo else None


def chunk_text(text: str, chunk_words: int, overlap_words: int) -> list[str]:
    """A document cut into passages (see the module's docstring for the rule).

    >>> chunk_text(" ".join(f"w{i}" for i in range(10)), chunk_words=4, overlap_words=1)
    ['w0 w1 w2 w3', 'w3 w4 w5 w6', 'w6 w7 w8 w9']
    >>> chunk_text("# A\\none two three\\n\\n# B\\nfour five", chunk_words=6, overlap_words=2)
    ['# A\\n\\none two three', '# B\\n\\nfour five']
    """
    words, seps, headings, paragraphs = _words(text)
    chunks: list[str] = []
    start, n = 0, len(words)
    while start < n:
        end = next_start = start + chunk_words
        if end >= n:
            end = next_start = n
        else:
            lo = start + max(1, chunk_words // 2)  # cut only in the window's second half
            cut = _last_between(headings, lo, end)
            if cut is None:
                cut = _last_between(paragraphs, lo, end)
            if cut is None:
                next_start = end - overlap_words
            else:
                end = next_start = cut
        chunks.append(words[start] + "".join(seps[i] + words[i] for i in range(start + 1, end)))
        start = next_start
    return chunks


def passages_of(document: str, text: str, chunk_words: int, overlap_words: int) -> list[Passage]:
    """One document's passages, with ids `<document>#1`, `<document>#2`, ..."""
    chunks = chunk_text(text, chunk_words, overlap_words)
    return [Passage(f"{document}#{n}", document, chunk) for n, chunk in enumerate(chunks, 1)]


def _digest(value: object) -> str:
    blob = json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.casefold())


# ---------------------------------------------------------------------------- the base


class KnowledgeBase:
    """Passages and their index, built once and searched for every item.

    `retriever` is "bm25" or "dense"; dense needs `embedder` (a local sentence-transformers
    model folder) and caches the passages' embeddings in `cache_dir` when one is given.
    """

    def __init__(
        self,
        passages: list[Passage],
        retriever: str = "bm25",
        embedder: str | None = None,
        cache_dir: Path | None = None,
        sources: dict | None = None,
    ):
        self.passages = list(passages)
        if not self.passages:
            raise ValueError("a knowledge base needs at least one passage")
        self.retriever = retriever
        self.embedder = embedder
        self.sources = sources or {}  # what load_knowledge read and skipped, for describe()
        self.passages_hash = _digest([[p.id, p.text] for p in self.passages])
        if retriever == "bm25":
            from rank_bm25 import BM25Okapi

            self._bm25 = BM25Okapi([_tokens(p.text) or ["<empty>"] for p in self.passages])
        elif retriever == "dense":
            self._model = _load_embedder(embedder)
            self._embeddings = self._passage_embeddings(cache_dir)
        else:
            raise ValueError(f"unknown retriever {retriever!r}; retrievers are bm25, dense")

    def _passage_embeddings(self, cache_dir: Path | None):
        """(passages, dim) normalised embeddings, read from `cache_dir` when it has them."""
        import numpy as np

        key = _digest([_embedder_fingerprint(self.embedder), self.passages_hash])[:24]
        path = Path(cache_dir) / f"knowledge-{key}.npy" if cache_dir else None
        if path and path.is_file():
            cached = np.load(path)
            if cached.shape[0] == len(self.passages):
                return cached
        texts = [p.text for p in self.passages]
        embeddings = self._model.encode_document(
            texts, normalize_embeddings=True, show_progress_bar=False
        )
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(path.stem + ".partial.npy")
            np.save(partial, embeddings)
            os.replace(partial, path)  # never a half-written cache
        return embeddings

    def search(self, query: str, k: int) -> list[Passage]:
        """The k passages that best match `query`, best first (ties: the earlier passage)."""
        return self.search_many([query], k)[0]

    def search_many(self, queries: list[str], k: int) -> list[list[Passage]]:
        """`search` for every query; dense encodes all the queries in one batch."""
        import numpy as np

        if not queries:
            return []
        if self.retriever == "bm25":
            scores = np.stack([self._bm25.get_scores(_tokens(q)) for q in queries])
        else:
            queries_emb = self._model.encode_query(
                list(queries), normalize_embeddings=True, show_progress_bar=False
            )
            scores = queries_emb @ self._embeddings.T  # (queries, passages): cosine similarity
        # A stable sort of the negated scores keeps tied passages in their order.
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return [[self.passages[i] for i in row] for row in order]

    def describe(self) -> dict:
        """What the base holds, for the run's report: counts, settings and a content hash."""
        documents = {p.document for p in self.passages}
        return {
            "documents": len(documents) + len(self.sources.get("empty", [])),
            "passages": len(self.passages),
            "retriever": self.retriever,
            "embedder": self.embedder,
            **self.sources,
            "index_hash": _digest([self.retriever, self.embedder, self.passages_hash])[:16],
        }


def _load_embedder(embedder: str | None):
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise UserError(
            "retriever `dense` needs the `sentence-transformers` package",
            "task.knowledge.retriever",
            f"{RAG_INSTALL}, or set retriever: bm25",
        ) from None
    folder = Path(embedder or "").expanduser()
    if not embedder or not folder.is_dir():
        raise UserError(
            f"the embedder {embedder!r} is not a folder",
            "task.knowledge.embedder",
            "give the folder of a sentence-transformers model saved on this machine",
        )
    try:
        return SentenceTransformer(str(folder))
    except Exception as err:  # a folder that is not a model fails in many ways
        raise UserError(
            f"cannot load the embedder {folder}: {err}",
            "task.knowledge.embedder",
            "give the folder of a sentence-transformers model (the one holding modules.json)",
        ) from None


def _embedder_fingerprint(embedder: str) -> list:
    """The embedder's folder and its files' names, sizes and times: a model saved again in
    the same folder gets new embeddings."""
    folder = Path(embedder).expanduser().resolve()
    stats = []
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        stat = file.stat()
        stats.append((file.relative_to(folder).as_posix(), stat.st_size, stat.st_mtime_ns))
    return [str(folder), stats]


def load_knowledge(config: KnowledgeConfig, cache_dir: Path | None = None) -> KnowledgeBase:
    """Read, chunk and index the documents of `task.knowledge`.

    Every path must exist and the documents must hold some text; each mistake is a
    `UserError` naming `task.knowledge.paths` and the path.
    """
    documents, skipped = find_documents(list(config.paths))
    passages: list[Passage] = []
    empty: list[str] = []
    for name, file in documents:
        text = read_document(file)
        found = passages_of(name, text, config.chunk_words, config.overlap_words)
        passages += found
        empty += [] if found else [name]
    if not passages:
        where = ", ".join(str(p) for p in config.paths)
        what = f"no text in {where}: {len(documents)} documents read"
        if skipped:
            what += f", {sum(skipped.values())} files skipped ({', '.join(sorted(skipped))})"
        raise UserError(
            what, FIELD, f"give folders or files of documents ending in {', '.join(SUFFIXES)}"
        )
    sources = {
        "skipped": sum(skipped.values()),
        "skipped_suffixes": dict(sorted(skipped.items())),
        "empty": empty,
        "chunk_words": config.chunk_words,
        "overlap_words": config.overlap_words,
    }
    return KnowledgeBase(passages, config.retriever, config.embedder, cache_dir, sources)


# ---------------------------------------------------------------------------- prompts, hits


def with_passages(messages: list[dict], passages: list[Passage]) -> list[dict]:
    """The prompt with `passages` (in the order given) and the question in its last user
    turn; the system prompt and earlier turns untouched (see the module's docstring)."""
    last = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
    if last is None:
        raise ValueError("the prompt has no user turn to put the passages in")
    out = [dict(m) for m in messages]
    if passages:
        context = "\n\n".join(f"[{p.id}]\n{p.text}" for p in passages)
        question = messages[last]["content"]
        out[last]["content"] = (
            f"Use these passages to answer the question.\n\n{context}\n\nQuestion: {question}"
        )
    return out


def _names_of(passage: Passage) -> set[str]:
    doc = PurePosixPath(passage.document.casefold())
    return {passage.id.casefold(), str(doc), doc.name, doc.stem}


def retrieval_hit(meta: dict, passages: list[Passage], source_field: str) -> bool | None:
    """Whether a retrieved passage comes from the source the item names in `meta`: its
    document (the relative path, the file name or the stem) or its passage id. None when the
    item names none. A list names several sources, any of which counts.

    >>> found = [Passage("guide/ports.md#2", "guide/ports.md", "...")]
    >>> [retrieval_hit({"document": d}, found, "document") for d in ("ports", "guide/ports.md#1")]
    [True, False]
    >>> retrieval_hit({}, found, "document") is None
    True
    """
    named = meta.get(source_field)
    if named in (None, "", []):
        return None
    wanted = list(named) if isinstance(named, list | tuple) else [named]
    wanted = [str(w).replace("\\", "/").removeprefix("./").casefold() for w in wanted]
    for passage in passages:
        names = _names_of(passage)
        full = (passage.document.casefold(), passage.id.casefold())
        for w in wanted:
            if w in names or any(w.endswith("/" + f) for f in full):
                return True
    return False


def hit_rate(hits: list[bool | None]) -> dict | None:
    """The share of items whose source was retrieved, over the items that name one.

    >>> hit_rate([True, False, None, True, True])
    {'hits': 3, 'named': 4, 'rate': 0.75}
    >>> hit_rate([None, None]) is None
    True
    """
    named = [h for h in hits if h is not None]
    if not named:
        return None
    return {"hits": sum(named), "named": len(named), "rate": sum(named) / len(named)}
