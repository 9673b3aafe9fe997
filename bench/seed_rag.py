"""A replica of the seed's retrieval pipeline (its ``multi_agent/rag_pipeline.py``), for the benchmark.

Written here from a description of that file's behaviour (the seed's code is not copied), with the
libraries it used: LangChain's ``TextLoader``/``PyPDFLoader``, ``RecursiveCharacterTextSplitter``
(600/80), ``FAISS`` over ``HuggingFaceEmbeddings`` (k 8), ``BM25Retriever`` (k 8, whitespace
tokens), its own fusion (score = weight / (rank + 1), BM25 0.4, dense 0.6, keyed by source + first
200 characters, the max of the two when both find a chunk), an optional cross-encoder over all fused
chunks, and the first k. Rebuilt from the files at every start (the seed kept no index).

Loading: each text file is tried with ``TextLoader`` in the seed's encoding order, moving on only on
``UnicodeDecodeError``; a file that raises anything else is reported and skipped, as the seed did.
The installed langchain_community wraps decode errors in ``RuntimeError``, so with it a file that is
not UTF-8 raises at the first encoding and is skipped (``wrapped_decode_errors="raise"``, what a user
of the seed gets today). With a TextLoader that let ``UnicodeDecodeError`` through (older versions;
``wrapped_decode_errors="unwrap"``), such a file reaches ``utf-16``, which never returns text for a
file without a BOM: Python's utf-16 stream decoder raises UnicodeDecodeError for invalid UTF-16 (then
``gbk`` reads GBK/GB2312 right and Big5 as mojibake) and a bare UnicodeError ("does not start with
BOM") for bytes that happen to be valid UTF-16, which the seed's loop does not catch (file skipped).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

TEXT_SUFFIXES = {".txt", ".md", ".mdx", ".csv", ".log"}
PDF_SUFFIXES = {".pdf"}
ENCODINGS = ("utf-8", "utf-16", "gbk", "gb2312", "latin-1")
CHUNK_SIZE, CHUNK_OVERLAP = 600, 80
RETRIEVER_K = 8
BM25_WEIGHT, DENSE_WEIGHT = 0.4, 0.6
KEY_CHARS = 200
RERANK_KEEP_MIN = 4


def load_text(path: Path, wrapped_decode_errors: str = "raise") -> list:
    """The seed's text loading: TextLoader per encoding, next one only on UnicodeDecodeError,
    else the bytes as UTF-8 with errors ignored. ``wrapped_decode_errors="unwrap"`` treats the
    RuntimeError the installed TextLoader raises around a decode error as that decode error."""
    from langchain_community.document_loaders import TextLoader
    from langchain_core.documents import Document

    for enc in ENCODINGS:
        try:
            return TextLoader(str(path), encoding=enc).load()
        except UnicodeDecodeError:
            continue
        except RuntimeError as e:
            if wrapped_decode_errors == "unwrap" and isinstance(e.__cause__, UnicodeDecodeError):
                continue
            raise
    return [Document(page_content=path.read_bytes().decode("utf-8", errors="ignore"),
                     metadata={"source": str(path)})]


def load_folder(root: Path, wrapped_decode_errors: str = "raise") -> tuple[list, list[tuple[str, str]]]:
    """Every file under ``root`` with a suffix the seed read -> (documents, [(file, error)])."""
    from langchain_community.document_loaders import PyPDFLoader

    docs, failed = [], []
    for p in sorted(Path(root).rglob("*")):
        suffix = p.suffix.lower()
        if not p.is_file() or suffix not in TEXT_SUFFIXES | PDF_SUFFIXES:
            continue
        try:
            docs += PyPDFLoader(str(p)).load() if suffix in PDF_SUFFIXES else load_text(p, wrapped_decode_errors)
        except Exception as e:  # the seed printed the file and went on
            failed.append((str(p), f"{type(e).__name__}: {e}"))
    return docs, failed


def split(docs: list) -> list:
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    return RecursiveCharacterTextSplitter(chunk_size=CHUNK_SIZE, chunk_overlap=CHUNK_OVERLAP).split_documents(docs)


def doc_key(doc) -> tuple[str, str]:
    return doc.metadata.get("source", ""), doc.page_content[:KEY_CHARS]


def fuse(bm25_docs: list, dense_docs: list, weights: tuple[float, float] = (BM25_WEIGHT, DENSE_WEIGHT)) -> list:
    """The seed's fusion: weight / (rank + 1) per list, a chunk found by both keeps the larger
    score (not the sum), highest first (ties keep first-seen order, BM25's list first)."""
    best: dict[tuple[str, str], tuple[float, object]] = {}
    for docs, w in ((bm25_docs, weights[0]), (dense_docs, weights[1])):
        for rank, d in enumerate(docs):
            key, score = doc_key(d), w / (rank + 1)
            if key not in best or score > best[key][0]:
                best[key] = (score, best[key][1] if key in best else d)
    return [d for _, d in sorted(best.values(), key=lambda t: -t[0])]


@dataclass
class SeedReplica:
    """Build with :meth:`build`; :meth:`search` returns LangChain documents, best first."""
    embeddings: object                      # a LangChain Embeddings (the seed: HuggingFaceEmbeddings)
    reranker: object | None = None          # a sentence-transformers CrossEncoder, or None (fused order)
    wrapped_decode_errors: str = "raise"
    docs: list = field(default_factory=list)
    failed: list = field(default_factory=list)
    chunks: list = field(default_factory=list)

    def build(self, root: Path) -> "SeedReplica":
        from langchain_community.retrievers import BM25Retriever
        from langchain_community.vectorstores import FAISS

        self.docs, self.failed = load_folder(root, self.wrapped_decode_errors)
        self.chunks = split(self.docs)
        self.dense = FAISS.from_documents(self.chunks, self.embeddings).as_retriever(
            search_kwargs={"k": RETRIEVER_K})
        self.bm25 = BM25Retriever.from_documents(self.chunks)
        self.bm25.k = RETRIEVER_K
        return self

    def search(self, query: str, k: int = 3, rerank: bool = True) -> list:
        fused = fuse(self.bm25.invoke(query), self.dense.invoke(query))
        if rerank and self.reranker is not None and fused:
            scores = self.reranker.predict([(query, d.page_content) for d in fused], show_progress_bar=False)
            fused = [d for _, d in sorted(zip(scores, fused), key=lambda t: -t[0])][:max(k, RERANK_KEEP_MIN)]
        return fused[:k]
