"""The pipeline end to end through expand_data.py and Expander: document captions -> captions.csv /
train.json / provenance.jsonl, appending to training, the knowledge base, URLs with crawling, re-sync,
a scripted generator with curation and the cache."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

import expand_data
from vlft.data import load_samples
from vlft.data.expand import ExpandConfig, Expander
from vlft.data.expand.generate import ScriptedGenerator


def _run(capsys, *args) -> tuple[int, str]:
    rc = expand_data.main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out + out.err


def test_document_captions_to_outputs_readable_by_csv2json(docs_dir, tmp_path, capsys):
    out = tmp_path / "out"
    rc, text = _run(capsys, "--source", docs_dir, "--output", out)
    assert rc == 0, text
    rows = list(csv.DictReader(open(out / "captions.csv", encoding="utf-8")))
    caps = sorted(r["caption"] for r in rows)
    assert caps == sorted(["A kitchen with people preparing pizzas on a wooden table.", "一只猫躺在沙发上晒太阳",
                           "Fishing boats moored at the pier.", "A busy street next to the harbour at noon",
                           "停靠在码头的渔船"])
    assert all((out / r["image_path"]).is_file() for r in rows)
    # csv2json reads captions.csv as it is
    import csv2json
    assert csv2json.main(["--csv", str(out / "captions.csv"), "--json", str(tmp_path / "c.json")]) == 0
    assert len(load_samples(tmp_path / "c.json")) == 5
    loaded = load_samples(out / "train.json")
    assert len(loaded) == 5 and not loaded.n_skipped
    zh = next(s for s in loaded if s["messages"][1]["content"][0]["text"] == "一只猫躺在沙发上晒太阳")
    assert zh["messages"][0]["content"][1]["text"] == "描述这张图片。"     # prompt in the caption's language
    prov = [json.loads(l) for l in (out / "provenance.jsonl").read_text(encoding="utf-8").splitlines()]
    pdf = [p for p in prov if p["source"].endswith("report.pdf")]
    assert sorted(p["page"] for p in pdf) == [1, 2] and {p["generator"] for p in prov} == {"document"}
    assert "images dropped: duplicate: 1, tiny: 2, unreadable: 1" in text


def test_append_to_train_dedup_atomic_and_resync(docs_dir, tmp_path, capsys, coco_sample_dir):
    train = tmp_path / "data" / "train.jsonl"
    train.parent.mkdir()
    img = shutil.copy(coco_sample_dir / "images" / "000000062554.jpg", train.parent)
    existing = {"id": "old", "messages": [{"role": "user", "content": [{"type": "image", "image": img},
                                                                      {"type": "text", "text": "COCO Yes:"}]},
                                          {"role": "assistant", "content": [{"type": "text", "text": "old one"}]}]}
    train.write_text(json.dumps(existing) + "\n", encoding="utf-8")
    args = ["--source", docs_dir, "--output", tmp_path / "out", "--to", "train", "--train_json", train]
    rc, text = _run(capsys, *args)
    assert rc == 0 and "training file: 5 added, 0 already there" in text
    lines = train.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 6 and json.loads(lines[0])["id"] == "old"          # JSONL kept, old record first
    assert len(load_samples(train)) == 6                                  # image paths relative to train's folder
    rc, text = _run(capsys, *args)
    assert "4 unchanged" in text and "training file: 0 added, 5 already there" in text
    # a changed file is extracted again; the others are skipped
    (docs_dir / "page.html").write_text("<h1>New</h1><figure><img src='img/boats.jpg'><figcaption>Boats at dawn in "
                                        "the harbour.</figcaption></figure>", encoding="utf-8")
    rc, text = _run(capsys, *args)
    assert "1 read, 3 unchanged" in text and "training file: 1 added, 3 already there" in text
    assert not list(train.parent.glob(".train.jsonl.*"))                  # no temp file left


def test_bad_sources_skipped_with_one_line(docs_dir, tmp_path, capsys):
    (docs_dir / "broken.pdf").write_bytes(b"%PDF-1.7\nnot a pdf")
    rc, text = _run(capsys, "--source", docs_dir, tmp_path / "missing.pdf", "--output", tmp_path / "out")
    assert rc == 0
    skipped = [l for l in text.splitlines() if l.startswith("skipped ")]
    assert len(skipped) == 2 and any("broken.pdf: corrupt or unreadable PDF" in l for l in skipped)
    assert any("missing.pdf: no such file" in l for l in skipped)
    assert "Traceback" not in text


def test_flag_errors_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit):
        expand_data.main(["--source", str(tmp_path), "--to", "train"])
    assert "train_json" in capsys.readouterr().err
    rc, text = _run(capsys, "--source", tmp_path, "--output", tmp_path / "o", "--generator", "local",
                    "--model", tmp_path / "nope")
    assert rc == 2 and text.strip().startswith("error: ") and "model folder not found" in text
    assert "Traceback" not in text and len(text.strip().splitlines()) == 1


@pytest.mark.slow
def test_to_kb_then_query_finds_the_document(docs_dir, site, tmp_path, capsys):
    from multi_agent.rag import KnowledgeBase, RagConfig

    base, root, _ = site
    kb_dir = tmp_path / "kb"
    args = ["--source", docs_dir, base + "/about.html", "--rate_limit", "0", "--output", tmp_path / "out"]
    assert _run(capsys, *args)[0] == 0                     # a first run without the knowledge base
    args += ["--to", "kb", "--kb_dir", kb_dir]
    rc, text = _run(capsys, *args)
    # unchanged sources, but the knowledge base lacks them: all read again and added
    assert rc == 0 and "5 read, 0 unchanged" in text and "knowledge base: 5 added" in text
    assert len(list((kb_dir / "expanded").iterdir())) == 5
    kb = KnowledgeBase(RagConfig(kb_dir=kb_dir, reranker=None))
    hit = kb.search("How many more ships did the harbour handle?", k=3, rerank=False)[0]
    assert hit.source.startswith("expanded/page-") and hit.source.endswith(".md")    # HTML -> Markdown
    hit = kb.search("集装箱运输量增长", k=3, rerank=False)[0]
    assert hit.source.startswith("expanded/report-") and hit.page == 2                # the PDF itself, paged
    hit = kb.search("How often do you report on the port?", k=3, rerank=False)[0]
    assert hit.source.startswith("expanded/about-")                                    # a web page
    # re-sync: nothing changed, nothing re-extracted or re-embedded
    rc, text = _run(capsys, *args)
    assert "0 read, 5 unchanged" in text and "0 added, 0 changed" in text and "(0 embedded)" in text
    # the web page changes: only it is fetched, extracted and re-indexed
    (root / "about.html").write_text("<h1>About</h1><p>We now report on the port every day.</p>", encoding="utf-8")
    rc, text = _run(capsys, *args)
    assert "1 read, 4 unchanged" in text and "0 added, 1 changed" in text
    hit = KnowledgeBase(RagConfig(kb_dir=kb_dir, reranker=None)).search("report every day", k=1, rerank=False)[0]
    assert hit.source.startswith("expanded/about-") and "every day" in hit.text


def test_url_crawl_robots_pdf_and_conditional_resync(site, tmp_path, capsys):
    base, root, server = site
    out = tmp_path / "out"
    args = ["--source", base + "/index.html", "--crawl_depth", "1", "--rate_limit", "0", "--output", out,
            "--to", "train", "--train_json", tmp_path / "train.json"]
    rc, text = _run(capsys, *args)
    assert rc == 0, text
    assert f"skipped {base}/private/secret.html: disallowed by robots.txt" in text
    assert "/private/secret.html" not in server.hits
    caps = sorted(r["caption"] for r in csv.DictReader(open(out / "captions.csv", encoding="utf-8")))
    # the page's <figcaption> and the linked PDF's "Figure 1: ..." line
    assert caps == ["A kitchen with people preparing pizzas on a wooden table.",
                    "The new crane at the container terminal."]
    prov = [json.loads(l) for l in (out / "provenance.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sorted(p["source"].rsplit("/", 1)[-1] for p in prov) == ["index.html", "report.pdf"]
    server.hits.clear()
    rc, text = _run(capsys, *args)
    assert "0 read, 3 unchanged" in text and "training file: 0 added, 2 already there" in text
    # unchanged pages answered 304: no image or body fetched again
    assert "/photo.jpg" not in server.hits


def _scripted(p):
    """Supported, unsupported, wrong-language and duplicate answers, by what the prompt is about."""
    if "Passage:" in p.text and "handled more ships" in p.text:
        return ("Q: What did the harbour handle this year?\nA: The harbour handled more ships this year.\n"
                "Q: Who won the football match?\nA: Manchester United won three goals to nil.\n"
                "Q: What did the harbour handle this year?\nA: The harbour handled more ships this year.\n"
                "Q: 港口怎么样?\nA: 港口处理了更多船只。")
    if "Passage:" in p.text and "pier" in p.text:
        return "Q: What was rebuilt?\nA: The pier was rebuilt in 2019 after the storm."
    if "Passage:" in p.text:
        return "no pairs in this answer"
    if "段落" in p.text:
        return "问：集装箱运输量增长了多少？\n答：集装箱运输量比去年增长了百分之十二。"
    if "caption in the document" in p.text or "图注是" in p.text:
        return None                 # a failed request: counted, not fatal
    return "A photo from the document."


def test_scripted_generator_curation_counts_and_cache(docs_dir, tmp_path):
    cfg = ExpandConfig(source=[str(docs_dir / "page.html"), str(docs_dir / "plain.txt"), str(docs_dir / "report.pdf")],
                       output=tmp_path / "out", min_image_side=64)
    gen = ScriptedGenerator(_scripted, name="scripted-v1")
    phases = []
    ex = Expander(cfg, generator=gen, progress=lambda ph, d, t, n: phases.append(ph))
    res = ex.collect()
    assert dict(res.removed) == {"length": 0, "language": 1, "support": 1, "duplicate": 1, "near_duplicate": 0}
    qa = sorted(p.answer for p in res.pairs if p.kind == "qa")
    assert qa == ["The harbour handled more ships this year.", "The pier was rebuilt in 2019 after the storm.",
                  "集装箱运输量比去年增长了百分之十二。"]
    assert all(p.scores["support"] >= 0.5 for p in res.pairs if p.kind == "qa")
    assert res.failed == 4 and gen.calls == res.generated     # the 4 captioned figures
    assert {"sources", "generate", "curate"} <= set(phases)
    rep = ex.save(res)
    loaded = load_samples(tmp_path / "out" / "train.json")
    text_only = [s for s in loaded if all(c["type"] == "text" for m in s["messages"] for c in m["content"])]
    assert len(text_only) == 3 and rep.written == len(loaded)
    # a rerun (new extraction forced by a new output state) asks the generator nothing it already answered
    (tmp_path / "out" / "sync_state.json").unlink()
    gen2 = ScriptedGenerator(_scripted, name="scripted-v1")
    res2 = Expander(cfg, generator=gen2).collect()
    assert gen2.calls == 4 and res2.cached == res.generated - 4     # only the failed prompts are retried
    assert sorted(p.id for p in res2.pairs) == sorted(p.id for p in res.pairs)


def test_judge_pass_drops_what_the_judge_rejects(docs_dir, tmp_path):
    def fn(p):
        if "Reply with one word" in p.text:
            return "No, it is not in the text." if "2019" in p.text.split("Answer:")[-1] else "Yes."
        if "只回答一个字" in p.text:
            return "是"
        return _scripted(p)
    cfg = ExpandConfig(source=[str(docs_dir / "page.html"), str(docs_dir / "plain.txt"), str(docs_dir / "report.pdf")],
                       output=tmp_path / "out", judge=True)
    res = Expander(cfg, generator=ScriptedGenerator(fn, name="judge-v1")).collect()
    assert res.removed["judge"] == 1
    qa = sorted(p.answer for p in res.pairs if p.kind == "qa")
    assert qa == ["The harbour handled more ships this year.", "集装箱运输量比去年增长了百分之十二。"]
    assert all(p.scores["judge"] is True for p in res.pairs if p.kind == "qa")


def test_parse_verdict():
    from vlft.data.expand.generate import parse_verdict
    assert [parse_verdict(x) for x in ("Yes.", "**yes**", "是的", "No, because", "否", "maybe", None)] == [
        True, True, True, False, False, None, None]
