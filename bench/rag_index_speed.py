"""First-index speed of the knowledge base (issue 22): the code before the change vs today's defaults,
side by side in one run over the same real files.

    python -m bench.rag_index_speed [--chunks 1500] [--queries 100] [--threads 0]

Corpus: real text nobody here wrote for this (the project's README and docs, the sample knowledge
base, /usr/share/common-licenses, /usr/share/doc/**/*.txt|md in path order) copied into a temp
folder until the old chunking (500/80) gives ``--chunks`` chunks. Each row is one fresh process
(so peak RSS is its own) that loads the embedder and builds a first index, timed from the start
of the load (what a user waits for); the one-time ONNX export is warmed before and reported
apart. Rows:

* ``old``: the code at ``--baseline-ref`` (before this work), extracted with ``git archive``: torch
  sentence-transformers, batch 32, overlap 80.
* ``new``: today's defaults.
* ablations: each change alone on top of the old settings.
* ``OPTIMIZED_ROW``: the float export passed through ``onnxruntime.transformers.optimizer``
  (model_type bert: fused EmbedLayerNormalization / Attention / SkipLayerNormalization / BiasGelu),
  saved into a cache folder of its own (``$MULTI_AGENT_ONNX_CACHE`` of that row only).

Threads: by default (``--threads 0``) each row gets what a user gets (no OMP_NUM_THREADS: torch
and ONNX Runtime one thread per core). CPU seconds (user + system, all threads) are reported too,
since the cores here are shared. Quality: per-chunk cosine of every chunk vector against the
``old`` index's (rows with the old chunking), and recall@5 of ``--queries`` sentences from the
corpus with every third word dropped, fused (BM25 + dense) and dense only.
Writes bench/out/rag_index_speed.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASELINE_REF = "49165f8"     # main before the first-index speed work (issue 22)
# Runs the float export rewritten offline by onnxruntime.transformers.optimizer (a copy in its own cache).
OPTIMIZED_ROW = "onnx float, transformers optimizer graph, batch 16, overlap 80"
ROWS = {
    # name: (code, settings); the baseline code ignores keys it does not know
    "old": ("baseline", {"embed_backend": None, "batch_size": 32, "chunk_overlap": 80}),
    "old settings, today's code (torch)": ("today", {"embed_backend": "torch", "batch_size": 32,
                                                     "chunk_overlap": 80}),
    "onnx float, batch 16, overlap 80": ("today", {"embed_backend": "onnx", "batch_size": 16,
                                                   "chunk_overlap": 80}),
    "onnx int8, batch 16, overlap 80": ("today", {"embed_backend": "onnx-int8", "batch_size": 16,
                                                  "chunk_overlap": 80}),
    "torch, batch 32, overlap 40": ("today", {"embed_backend": "torch", "batch_size": 32, "chunk_overlap": 40}),
    "onnx float, batch 8, overlap 80": ("today", {"embed_backend": "onnx", "batch_size": 8, "chunk_overlap": 80}),
    OPTIMIZED_ROW: ("today", {"embed_backend": "onnx", "batch_size": 16, "chunk_overlap": 80}),
    "onnx float, batch 8, overlap 40": ("today", {"embed_backend": "onnx"}),
    "previous defaults (onnx float, batch 16, overlap 40)": ("today", {"embed_backend": "onnx", "batch_size": 16}),
    "onnx int8, batch 16, overlap 40": ("today", {"batch_size": 16}),
    "new defaults (onnx int8, batch 8, overlap 40)": ("today", {}),
}


def collect_corpus(dest: Path, target: int) -> dict:
    """Copy real text files into ``dest`` until the old chunking gives ``target`` chunks."""
    sys.path.insert(0, str(REPO))
    from multi_agent.rag.chunking import chunk_text

    sources = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")),
               *sorted((REPO / "multi_agent" / "knowledge_base").iterdir()),
               *sorted(Path("/usr/share/common-licenses").glob("*")),
               *sorted(p for p in Path("/usr/share/doc").rglob("*") if p.suffix in (".txt", ".md"))]
    total, files, seen = 0, 0, set()
    for src in sources:
        if total >= target:
            break
        try:
            if not src.is_file() or src.stat().st_size > 300_000 or src.resolve() in seen:
                continue
            text = src.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        seen.add(src.resolve())
        rel = "_".join(src.parts[-3:]) if src.is_relative_to("/usr") else src.relative_to(REPO).as_posix()
        rel = rel.replace("/", "_")
        if not rel.endswith((".md", ".txt")):
            rel += ".txt"
        (dest / rel).write_text(text, encoding="utf-8")
        total += len(chunk_text(text, 500, 80))
        files += 1
    return {"files": files, "chunks_old_chunking": total}


def make_queries(kb_dir: Path, n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """(queries, sentences): sentences of 60-250 chars from the corpus, each asked with every third
    word dropped (not verbatim); a hit is a top-5 chunk that contains the whole sentence."""
    from multi_agent.rag.chunking import sentence_spans

    rng = random.Random(seed)
    sents = []
    for p in sorted(kb_dir.iterdir()):
        text = p.read_text(encoding="utf-8")
        sents += [" ".join(text[s.start:s.end].split()) for s in sentence_spans(text)
                  if 60 <= s.end - s.start <= 250 and len(text[s.start:s.end].split()) >= 8]
    picked = rng.sample(sents, min(n, len(sents)))
    return [" ".join(w for i, w in enumerate(s.split()) if i % 3 != 2) for s in picked], picked


def one_row(args) -> int:
    """Child: load the embedder, build a first index, answer the queries; print one JSON line."""
    from multi_agent.rag import KnowledgeBase, RagConfig
    from multi_agent.rag.config import RagConfig as Cfg

    settings = json.loads(args.settings)
    known = set(Cfg.__dataclass_fields__)
    settings = {k: v for k, v in settings.items() if k in known and v is not None}
    cfg = RagConfig(kb_dir=Path(args.kb), index_dir=Path(args.index), reranker=None, **settings)
    cpu0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    kb = KnowledgeBase(cfg)
    kb.embedder.model  # noqa: B018 (the load is part of what a first index costs)
    load_s = time.perf_counter() - t0
    rep = kb.index()
    wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    out = {"chunks": rep.chunks, "embedded": rep.embedded, "load_s": round(load_s, 2), "wall_s": round(wall, 2),
           "cpu_s": round(cpu, 1), "chunks_per_s": round(rep.chunks / wall, 2),
           "peak_rss_mb": round(cpu1.ru_maxrss / 1024),
           "backend": getattr(kb.embedder, "backend", "torch")}
    queries, needles = json.loads(Path(args.queries).read_text(encoding="utf-8"))
    norm = [" ".join(n.split()) for n in needles]
    for name, c in (("fused", cfg), ("dense", cfg.replace(weights=[0.0, 1.0]))):
        k2 = KnowledgeBase(c)
        found = sum(any(n in " ".join(h.text.split()) for h in k2.search(q, k=5, rerank=False))
                    for q, n in zip(queries, norm))
        out[f"recall@5_{name}"] = round(found / len(queries), 3)
    print("ROW " + json.dumps(out), flush=True)
    return 0


def optimized_cache(work: Path, env: dict) -> tuple[Path, dict]:
    """A copy of the default model's float export rewritten by ONNX Runtime's transformer optimizer,
    in a cache folder of its own (same key, so the row's backend finds it): (folder, fused op counts)."""
    from onnxruntime.transformers import optimizer

    from multi_agent.rag.embed import resolve_model_path
    from multi_agent.rag.onnx_embed import cache_key, cache_root

    model_dir = Path(resolve_model_path("default"))
    src = Path(env.get("MULTI_AGENT_ONNX_CACHE") or cache_root()) / cache_key(model_dir, False)
    root = work / "onnx-optimized"
    shutil.copytree(src, root / src.name)
    meta = json.loads((src / "meta.json").read_text(encoding="utf-8"))
    heads, hidden = (json.loads((model_dir / "config.json").read_text())[k]
                     for k in ("num_attention_heads", "hidden_size"))
    model = optimizer.optimize_model(str(src / "model.onnx"), model_type="bert", num_heads=heads,
                                     hidden_size=hidden, opt_level=0, use_gpu=False)
    model.save_model_to_file(str(root / src.name / "model.onnx"))
    assert meta["dim"] == hidden
    return root, {k: v for k, v in model.get_fused_operator_statistics().items() if v}


def baseline_tree(ref: str, work: Path) -> Path | None:
    """The project's code at ``ref`` (multi_agent + vlft), or None where git cannot give it."""
    dest = work / "baseline"
    dest.mkdir()
    try:
        tar = subprocess.run(["git", "-C", str(REPO), "archive", ref, "multi_agent", "vlft"], check=True,
                             capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=tar, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"no baseline code at {ref} ({e}): the old row runs today's code with torch", file=sys.stderr)
        return None
    return dest


def vectors(index_dir: Path) -> dict:
    """chunk_id -> vector of a FAISS index folder."""
    import faiss
    import numpy as np

    version = (index_dir / "CURRENT").read_text().strip()
    index = faiss.read_index(str(index_dir / version / "faiss.index"))
    out = {}
    with open(index_dir / version / "chunks.jsonl", encoding="utf-8") as f:
        for line in f:
            c = json.loads(line)
            out[c["chunk_id"]] = np.asarray(index.reconstruct(int(c["vid"])))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunks", type=int, default=1500, help="corpus size, in chunks of the old chunking")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--threads", type=int, default=0, help="0: what a user gets (all cores); N: OMP_NUM_THREADS=N")
    ap.add_argument("--baseline-ref", default=BASELINE_REF, help="git revision of the 'old' row's code")
    ap.add_argument("--rows", nargs="*", default=list(ROWS), choices=list(ROWS))
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "rag_index_speed.json")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--one"]:                 # a child process: one row
        p = argparse.ArgumentParser()
        for a in ("--kb", "--index", "--settings", "--queries"):
            p.add_argument(a)
        return one_row(p.parse_args(argv[1:]))
    if argv[:1] == ["--optimize"]:            # a child process: the optimized model's cache
        print(json.dumps(optimized_cache(Path(argv[1]), dict(os.environ))[1]))
        return 0
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="rag-speed-"))
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    if args.threads:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    res: dict = {"cpu_count": os.cpu_count(), "threads": args.threads or "default (all cores)",
                 "load_avg_start": os.getloadavg(), "baseline_ref": args.baseline_ref, "rows": {}}
    try:
        kb_dir = work / "kb"
        kb_dir.mkdir()
        res["corpus"] = collect_corpus(kb_dir, args.chunks)
        queries, needles = make_queries(kb_dir, args.queries)
        qfile = work / "queries.json"
        qfile.write_text(json.dumps([queries, needles], ensure_ascii=False), encoding="utf-8")
        print(f"corpus: {res['corpus']}, {len(queries)} queries", flush=True)
        base = baseline_tree(args.baseline_ref, work)
        # The one-time export, paid before the timed rows (reported apart).
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "from multi_agent.rag.embed import Embedder as E\n"
                        "for b in ('onnx', 'onnx-int8'): E('default', None, b).dim"],
                       cwd=REPO, env={**env, "PYTHONPATH": str(REPO)}, check=True)
        res["onnx_export_warm_s"] = round(time.perf_counter() - t, 1)
        row_env = {}
        if OPTIMIZED_ROW in args.rows:
            # In a child: a child's peak RSS counts its parent's at the fork, so the parent stays small.
            proc = subprocess.run([sys.executable, "-m", "bench.rag_index_speed", "--optimize", str(work)],
                                  cwd=REPO, env={**env, "PYTHONPATH": str(REPO)}, check=True,
                                  capture_output=True, text=True)
            res["optimizer_fused_ops"] = json.loads(proc.stdout.splitlines()[-1])
            row_env[OPTIMIZED_ROW] = {"MULTI_AGENT_ONNX_CACHE": str(work / "onnx-optimized")}
        for name in args.rows:
            code, settings = ROWS[name]
            root = base if code == "baseline" and base is not None else REPO
            if code == "baseline" and base is None:
                settings = {**settings, "embed_backend": "torch"}
            cmd = [sys.executable, "-m", "bench.rag_index_speed", "--one", "--kb", str(kb_dir),
                   "--index", str(work / f"index-{len(res['rows'])}"), "--settings", json.dumps(settings),
                   "--queries", str(qfile)]
            # cwd first on sys.path: the row's code (multi_agent, vlft) wins, bench comes from REPO.
            proc = subprocess.run(cmd, cwd=root, env={**env, **row_env.get(name, {}),
                                                      "PYTHONPATH": f"{root}{os.pathsep}{REPO}"},
                                  capture_output=True, text=True)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("ROW ")), None)
            if line is None:
                print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
                raise SystemExit(f"row {name!r} failed")
            row = json.loads(line[4:])
            row["index"] = str(work / f"index-{len(res['rows'])}")
            res["rows"][name] = row
            print(f"{name}: {json.dumps(row)}", flush=True)
        old_vecs = vectors(Path(res["rows"]["old"]["index"])) if "old" in res["rows"] else None
        for name, row in res["rows"].items():
            if old_vecs is not None and ROWS[name][1].get("chunk_overlap") == 80:
                vecs = vectors(Path(row["index"]))
                cos = sorted(float(old_vecs[k] @ v) for k, v in vecs.items() if k in old_vecs)
                row["cosine_vs_old"] = {"chunks": len(cos), "min": round(cos[0], 4),
                                        "p1": round(cos[len(cos) // 100], 4),
                                        "mean": round(sum(cos) / len(cos), 4)}
            row.pop("index")
        old = res["rows"].get("old")
        for row in res["rows"].values():
            if old:
                row["speedup_wall"] = round(old["wall_s"] / row["wall_s"], 2)
                row["speedup_cpu"] = round(old["cpu_s"] / row["cpu_s"], 2)
        res["load_avg_end"] = os.getloadavg()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(table(res))
    return 0


def table(res: dict) -> str:
    lines = ["| row | backend | chunks | wall s (load) | chunks/s | CPU s | peak RSS MB | speed-up wall / CPU "
             "| cosine vs old min / mean | recall@5 fused / dense |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in res["rows"].items():
        cos = r.get("cosine_vs_old")
        cos_text = f"{cos['min']} / {cos['mean']}" if cos else "—"
        lines.append(f"| {name} | {r['backend']} | {r['chunks']} | {r['wall_s']} ({r['load_s']}) | {r['chunks_per_s']} "
                     f"| {r['cpu_s']} | {r['peak_rss_mb']} | {r.get('speedup_wall')}× / {r.get('speedup_cpu')}× "
                     f"| {cos_text} "
                     f"| {r['recall@5_fused']} / {r['recall@5_dense']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
