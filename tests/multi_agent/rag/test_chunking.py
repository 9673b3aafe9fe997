"""Chunks are exact slices with overlap and end at Chinese/English sentence boundaries."""

from __future__ import annotations

from multi_agent.rag.chunking import chunk_text, sentence_spans

ZH = ("混合专家把多个低秩专家放在同一层。路由器为每个词元挑选专家！为什么要负载均衡？"
      "因为否则所有词元会挤到一个专家上。") * 6
EN = ("LoRA adds low-rank matrices to frozen weights. Only the adapters are trained! "
      "Why does it save memory? Because optimizer states exist only for the adapters. ") * 6


def test_sentences_split_on_chinese_and_english_ends():
    zh = [ZH[s.start:s.end] for s in sentence_spans(ZH[:60])]
    assert zh[:3] == ["混合专家把多个低秩专家放在同一层。", "路由器为每个词元挑选专家！", "为什么要负载均衡？"]
    en = [EN[s.start:s.end] for s in sentence_spans(EN[:100])]
    assert en[0] == "LoRA adds low-rank matrices to frozen weights."
    assert en[1] == "Only the adapters are trained!"


def test_chunks_are_exact_slices_within_size_and_end_on_sentences():
    for text, ends in ((ZH, "。！？"), (EN, ".!?")):
        chunks = chunk_text(text, size=120, overlap=40)
        assert len(chunks) > 3
        for c in chunks:
            piece = text[c.start:c.end]
            assert 0 < len(piece) <= 120
            assert piece == piece.strip()
            assert piece[-1] in ends, piece
        # coverage: every sentence appears in some chunk
        covered = set()
        for c in chunks:
            covered.update(range(c.start, c.end))
        for s in sentence_spans(text):
            assert s.start in covered


def test_overlap_repeats_whole_trailing_sentences():
    chunks = chunk_text(ZH, size=120, overlap=40)
    overlaps = [a.end - b.start for a, b in zip(chunks, chunks[1:])]
    assert all(0 < o <= 40 for o in overlaps), overlaps  # each next chunk starts inside the previous
    assert all(ZH[b.start - 1] in "。！？" for b in chunks[1:])  # ...at a sentence start
    assert [c.start for c in chunk_text(ZH, size=120, overlap=0)][1] >= chunks[0].end


def test_overlong_sentence_is_split_and_always_progresses():
    text = "word " * 400  # one 2000-char "sentence" without terminators
    chunks = chunk_text(text, size=200, overlap=50)
    assert all(c.end - c.start <= 200 for c in chunks)
    assert chunks[-1].end == len(text.rstrip())
    assert all(b.start > a.start for a, b in zip(chunks, chunks[1:]))
    cjk = "长" * 1000
    assert sum(c.end - c.start for c in chunk_text(cjk, 100, 0)) == 1000
