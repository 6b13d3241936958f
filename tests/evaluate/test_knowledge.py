"""Retrieval over documents (`evaluate/knowledge.py`) and the handbook example that tests it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import handbook_generator
from tuneloop.config import KnowledgeConfig
from tuneloop.errors import UserError
from tuneloop.evaluate.knowledge import (
    KnowledgeBase,
    Passage,
    chunk_text,
    hit_rate,
    load_knowledge,
    retrieval_hit,
    with_passages,
)

REPO = Path(__file__).resolve().parents[2]


def kb_of(*paths: Path, **settings) -> KnowledgeBase:
    return load_knowledge(KnowledgeConfig(paths=list(paths), **settings))


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


# ---------------------------------------------------------------------------- reading


def test_reads_markdown_text_and_html_with_relative_ids(tmp_path):
    docs = tmp_path / "docs"
    write(docs / "guide" / "ports.md", "# Ports\n\nThe AX5 has six ports.")
    write(docs / "returns.txt", "Returns are free for thirty days.")
    page = (
        "<html><head><title>Hours</title><style>p { color: red }</style>"
        "<script>var hidden = 'never shown';</script></head><body>"
        "<h2>Support hours</h2><p>The desk opens at&nbsp;eight &amp; closes at six.</p>"
        "<ul><li>Monday</li><li>Friday</li></ul></body></html>"
    )
    write(docs / "hours.html", page)
    kb = kb_of(docs)
    assert [p.id for p in kb.passages] == ["guide/ports.md#1", "hours.html#1", "returns.txt#1"]
    assert kb.passages[0] == Passage("guide/ports.md#1", "guide/ports.md", kb.passages[0].text)
    html = kb.passages[1].text
    assert "## Support hours" in html and "opens at eight & closes at six." in html
    assert "- Monday\n- Friday" in html
    assert "hidden" not in html and "color" not in html
    assert kb.describe()["documents"] == 3


def test_a_file_given_directly_is_named_by_its_file_name(tmp_path):
    file = write(tmp_path / "deep" / "folder" / "faq.md", "Question and answer.")
    (passage,) = kb_of(file).passages
    assert (passage.id, passage.document) == ("faq.md#1", "faq.md")


def tiny_pdf(text: str) -> bytes:
    """A one-page PDF showing `text` in Helvetica, written by hand (no PDF library)."""
    content = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def test_reads_pdf_with_pypdf(tmp_path):
    pytest.importorskip("pypdf")
    write(tmp_path / "docs" / "manual.pdf", tiny_pdf("The warranty lasts eighteen months."))
    (passage,) = kb_of(tmp_path / "docs").passages
    assert passage.id == "manual.pdf#1"
    assert "The warranty lasts eighteen months." in passage.text


def test_pdf_without_pypdf_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pypdf", None)  # `import pypdf` now fails
    write(tmp_path / "docs" / "manual.pdf", tiny_pdf("text"))
    with pytest.raises(UserError) as err:
        kb_of(tmp_path / "docs")
    assert "pip install" in str(err.value) and "pypdf" in str(err.value)
    assert "task.knowledge" in str(err.value) and "manual.pdf" in str(err.value)


def test_broken_pdf_is_a_user_error(tmp_path):
    pytest.importorskip("pypdf")
    write(tmp_path / "broken.pdf", b"%PDF-1.4 this is not a pdf")
    with pytest.raises(UserError, match="broken.pdf"):
        kb_of(tmp_path / "broken.pdf")


def test_other_suffixes_are_skipped_and_counted_hidden_files_ignored(tmp_path):
    docs = tmp_path / "docs"
    write(docs / "a.md", "Some words here.")
    write(docs / "logo.png", b"\x89PNG")
    write(docs / "img" / "photo.png", b"\x89PNG")
    write(docs / "sheet.xlsx", b"PK")
    write(docs / "Makefile", "all:")
    write(docs / ".git" / "config", "[core]")
    write(docs / ".notes.md", "hidden")
    description = kb_of(docs).describe()
    assert description["documents"] == 1 and description["passages"] == 1
    assert description["skipped"] == 4
    assert description["skipped_suffixes"] == {"(none)": 1, ".png": 2, ".xlsx": 1}


def test_user_errors_name_the_field_and_path(tmp_path):
    cases = {
        "does not exist": tmp_path / "nowhere",
        "no text": tmp_path / "empty",
        ".docx": write(tmp_path / "report.docx", b"PK"),
        "not UTF-8": write(tmp_path / "latin.txt", "caf\xe9".encode("latin-1")),
    }
    (tmp_path / "empty").mkdir()
    for what, path in cases.items():
        with pytest.raises(UserError) as err:
            kb_of(path)
        message = str(err.value)
        assert what in message and "task.knowledge" in message and str(path) in message
        assert "fix:" in message


def test_a_folder_of_skipped_files_says_what_was_skipped(tmp_path):
    write(tmp_path / "docs" / "scan.tiff", b"II*")
    with pytest.raises(UserError, match=r"1 files skipped \(\.tiff\)"):
        kb_of(tmp_path / "docs")


def test_two_documents_with_one_name_are_a_user_error(tmp_path):
    a = write(tmp_path / "a" / "faq.md", "one")
    b = write(tmp_path / "b" / "faq.md", "two")
    with pytest.raises(UserError, match="both named 'faq.md'"):
        kb_of(a, b)
    # the same file reached twice (its folder and itself) is read once
    assert len(kb_of(tmp_path / "a", a).passages) == 1


# ---------------------------------------------------------------------------- chunking


def words(n: int, start: int = 0) -> list[str]:
    return [f"w{i}" for i in range(start, start + n)]


def test_windows_share_overlap_words_when_there_is_no_boundary():
    chunks = chunk_text(" ".join(words(500)), chunk_words=200, overlap_words=40)
    assert [c.split() for c in chunks] == [words(200), words(200, 160), words(180, 320)]


def test_a_passage_ends_before_a_heading_in_its_second_half():
    text = " ".join(words(150)) + "\n\n## Warranty\n\n" + " ".join(words(100, 150))
    first, second = chunk_text(text, chunk_words=200, overlap_words=40)
    assert first.split() == words(150)
    assert second.startswith("## Warranty\n\n") and second.split()[2:] == words(100, 150)


def test_a_heading_in_the_first_half_stays_inside_the_passage():
    text = "# Title\n\n" + " ".join(words(300))
    chunks = chunk_text(text, chunk_words=200, overlap_words=40)
    assert chunks[0].startswith("# Title\n\nw0") and len(chunks[0].split()) == 200


def test_a_passage_ends_before_a_paragraph_and_the_next_starts_there():
    text = (
        " ".join(words(120)) + "\n\n" + " ".join(words(60, 120)) + "\n\n" + " ".join(words(90, 180))
    )
    chunks = chunk_text(text, chunk_words=200, overlap_words=40)
    assert [c.split()[0] for c in chunks] == ["w0", "w180"]
    assert chunks[0].split() == words(180) and "w119\n\nw120" in chunks[0]


def test_passages_never_cross_documents_and_count_from_one(tmp_path):
    write(tmp_path / "a.txt", " ".join(words(30)))
    write(tmp_path / "b.txt", " ".join(words(5, 100)))
    kb = kb_of(tmp_path, chunk_words=20, overlap_words=5)
    assert [p.id for p in kb.passages] == ["a.txt#1", "a.txt#2", "b.txt#1"]
    assert kb.passages[1].text.split() == words(15, 15)
    assert kb.passages[2].text.split() == words(5, 100)


# ---------------------------------------------------------------------------- bm25


FACTS = {
    "routers.md": "# Routers\n\nThe AX5 router has six ports and a metal case.",
    "switches.md": "# Switches\n\nThe SW24 switch stacks up to eight units.",
    "returns.md": "# Returns\n\nUnopened items can be returned within thirty days.",
    "hours.txt": "The support desk opens at eight in the morning.",
}


@pytest.fixture
def facts_kb(tmp_path) -> KnowledgeBase:
    for name, text in FACTS.items():
        write(tmp_path / "docs" / name, text)
    return kb_of(tmp_path / "docs")


def test_bm25_finds_the_passage_that_answers(facts_kb):
    assert facts_kb.search("how many ports on the AX5 router?", k=1)[0].id == "routers.md#1"
    assert facts_kb.search("When can I RETURN unopened items", k=2)[0].id == "returns.md#1"
    queries = ["switch stacking", "desk opening hours", "ax5"]
    assert facts_kb.search_many(queries, 2) == [facts_kb.search(q, 2) for q in queries]


def test_search_returns_k_passages_and_breaks_ties_by_order(facts_kb):
    assert len(facts_kb.search("anything", k=3)) == 3
    assert len(facts_kb.search("router", k=10)) == 4  # no more than the base holds
    # no word in common: every score ties, and the passages come in their order
    assert [p.id for p in facts_kb.search("zzz", k=4)] == [p.id for p in facts_kb.passages]
    assert facts_kb.search_many([], 2) == []


def test_describe_counts_and_hashes_the_index(facts_kb, tmp_path):
    description = facts_kb.describe()
    assert description["documents"] == 4 and description["passages"] == 4
    assert description["retriever"] == "bm25" and description["embedder"] is None
    assert description["chunk_words"] == 200 and description["overlap_words"] == 40
    again = kb_of(tmp_path / "docs").describe()["index_hash"]
    smaller = kb_of(tmp_path / "docs", chunk_words=5, overlap_words=1).describe()["index_hash"]
    assert description["index_hash"] == again != smaller


# ---------------------------------------------------------------------------- prompts, hits


def test_with_passages_puts_passages_and_question_in_the_last_user_turn():
    system = {"role": "system", "content": "Answer with the number only."}
    earlier = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    prompt = [system, *earlier, {"role": "user", "content": "How many ports on the AX5?"}]
    passages = [Passage("routers.md#1", "routers.md", "The AX5 has six ports."),
                Passage("faq.md#3", "faq.md", "Ports are on the back.")]  # fmt: skip
    out = with_passages(prompt, passages)
    assert out[:3] == [system, *earlier]
    assert out[-1]["content"] == (
        "Use these passages to answer the question.\n\n"
        "[routers.md#1]\nThe AX5 has six ports.\n\n"
        "[faq.md#3]\nPorts are on the back.\n\n"
        "Question: How many ports on the AX5?"
    )
    assert prompt[-1]["content"] == "How many ports on the AX5?"  # the input is not changed
    assert with_passages(prompt, []) == prompt
    with pytest.raises(ValueError, match="no user turn"):
        with_passages([system], passages)


def test_retrieval_hit_matches_path_name_stem_or_passage_id():
    found = [Passage("guide/ports.md#2", "guide/ports.md", "...")]
    hit = lambda value: retrieval_hit({"source": value}, found, "source")  # noqa: E731
    for value in ["guide/ports.md", "ports.md", "ports", "guide/ports.md#2", "Guide/Ports.md",
                  "handbook/guide/ports.md", ["other.md", "ports"]]:  # fmt: skip
        assert hit(value) is True, value
    for value in ["guide/ports.md#1", "other.md", "port", ["a", "b"]]:
        assert hit(value) is False, value
    assert retrieval_hit({}, found, "source") is None
    assert retrieval_hit({"source": ""}, found, "source") is None
    assert retrieval_hit({"source": "ports"}, [], "source") is False


def test_hit_rate_counts_items_that_name_a_source():
    assert hit_rate([True, None, False, True]) == {"hits": 2, "named": 3, "rate": 2 / 3}
    assert hit_rate([None]) is None and hit_rate([]) is None


# ---------------------------------------------------------------------------- the handbook


@pytest.fixture(scope="module")
def handbook(tmp_path_factory):
    """The generated handbook (seed 0): (folder, questions)."""
    module = handbook_generator()
    out = tmp_path_factory.mktemp("kb")
    counts = module.write(out, seed=0)
    again = module.generate(seed=0)
    lines = (out / "questions.jsonl").read_text(encoding="utf-8").splitlines()
    questions = [json.loads(line) for line in lines]
    assert counts["questions"] == len(questions) == len(again.questions)
    assert [q["messages"][0]["content"] for q in questions] == [q for q, _, _ in again.questions]
    return out / "handbook", questions


def test_handbook_has_pages_of_each_format_and_one_page_per_answer(handbook):
    folder, questions = handbook
    pages = {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()}
    assert len(pages) >= 30 and len(questions) >= 200
    assert {Path(p).suffix for p in pages} == {".md", ".txt", ".html"}
    texts = {name: path.read_text(encoding="utf-8").casefold() for name, path in pages.items()}
    whole = "\n".join(texts.values())
    for q in questions:
        (user, assistant) = q["messages"]
        answer = assistant["content"].casefold()
        assert user["role"] == "user" and 0 < len(answer) <= 30
        assert q["meta"]["document"] in pages
        assert answer in texts[q["meta"]["document"]]
        assert whole.count(answer) == 1, answer
    assert len({q["messages"][0]["content"] for q in questions}) == len(questions)


def test_bm25_finds_the_handbook_page_of_almost_every_question(handbook):
    folder, questions = handbook
    kb = kb_of(folder)
    asked = [q["messages"][0]["content"] for q in questions]
    rates = {}
    for k in (2, 4):
        found = kb.search_many(asked, k=k)
        hits = [
            retrieval_hit(q["meta"], r, "document") for q, r in zip(questions, found, strict=True)
        ]
        rates[k] = hit_rate(hits)["rate"]
    # measured on seed 0: 0.989 (267/270) at k=2, 0.996 (269/270) at k=4
    assert rates[2] >= 0.95 and rates[4] >= 0.97
    assert kb.describe()["skipped"] == 0


# ---------------------------------------------------------------------------- dense


def tiny_embedder(folder: Path, texts: list[str]) -> Path:
    """A sentence-transformers model of static word embeddings (random, 16 wide) over the
    words of `texts`, saved to `folder`: built offline in a fraction of a second."""
    import numpy as np
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer, models, pre_tokenizers

    try:
        from sentence_transformers.sentence_transformer.modules import StaticEmbedding
    except ImportError:  # sentence-transformers 5
        from sentence_transformers.models import StaticEmbedding

    vocabulary = dict.fromkeys(w.casefold() for t in texts for w in t.split())
    tokenizer = Tokenizer(
        models.WordLevel({"[UNK]": 0, **{w: i for i, w in enumerate(vocabulary, 1)}}, "[UNK]")
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    weights = np.random.default_rng(0).normal(size=(len(vocabulary) + 1, 16))
    embedding = StaticEmbedding(tokenizer, embedding_weights=weights.astype(np.float32))
    SentenceTransformer(modules=[embedding], device="cpu").save(str(folder))
    return folder


def count_calls(monkeypatch, cls, name: str, calls: list) -> None:
    """Record (method name, number of inputs) for every call of `cls.name`."""
    original = getattr(cls, name)

    def counting(self, inputs, *args, **kwargs):
        calls.append((name, len(inputs)))
        return original(self, inputs, *args, **kwargs)

    monkeypatch.setattr(cls, name, counting)


def test_dense_retrieval_embeds_the_documents_once(tmp_path, monkeypatch):
    st = pytest.importorskip("sentence_transformers")
    for name, text in FACTS.items():
        write(tmp_path / "docs" / name, text)
    embedder = tiny_embedder(tmp_path / "embedder", list(FACTS.values()))
    calls: list = []
    count_calls(monkeypatch, st.SentenceTransformer, "encode_document", calls)
    count_calls(monkeypatch, st.SentenceTransformer, "encode_query", calls)
    settings = {"retriever": "dense", "embedder": str(embedder)}
    config = KnowledgeConfig(paths=[tmp_path / "docs"], **settings)
    kb = load_knowledge(config, cache_dir=tmp_path / "cache")
    assert calls == [("encode_document", 4)]
    (cached,) = (tmp_path / "cache").glob("*.npy")
    found = kb.search_many(["AX5 router ports", "thirty days returns"], k=3)
    assert [len(r) for r in found] == [3, 3]
    assert calls[1:] == [("encode_query", 2)]  # all the queries in one batch
    # a word-overlap query finds its passage even with random word vectors
    assert kb.search("The AX5 router has six ports", k=1)[0].id == "routers.md#1"
    assert kb.describe()["retriever"] == "dense" and kb.describe()["embedder"] == str(embedder)

    calls.clear()
    again = load_knowledge(config, cache_dir=tmp_path / "cache")
    assert calls == []  # the passages' embeddings come from the cache
    assert again.search_many(["AX5 router ports"], 3) == found[:1]
    assert list((tmp_path / "cache").glob("*.npy")) == [cached]

    changed = KnowledgeConfig(paths=[tmp_path / "docs"], chunk_words=5, overlap_words=1, **settings)
    calls.clear()
    smaller = load_knowledge(changed, cache_dir=tmp_path / "cache")  # other passages
    assert calls == [("encode_document", len(smaller.passages))] and len(smaller.passages) > 4
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2


def test_dense_errors_say_what_to_install_or_set(tmp_path, monkeypatch):
    write(tmp_path / "docs" / "a.md", "text")
    config = KnowledgeConfig(paths=[tmp_path / "docs"], retriever="dense", embedder="no/such/dir")
    with pytest.raises(UserError, match="task.knowledge.embedder"):
        load_knowledge(config)
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(UserError, match=r"pip install 'tuneloop\[rag\]'"):
        load_knowledge(config)
