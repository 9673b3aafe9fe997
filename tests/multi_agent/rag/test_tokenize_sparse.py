"""jieba BM25: Chinese queries score (the seed's BM25 scored 0 on every Chinese query)."""

from __future__ import annotations

from multi_agent.rag.sparse import SparseIndex
from multi_agent.rag.tokenize import cjk_ratio, tokenize


def test_tokenizer_segments_chinese_and_normalises_english():
    toks = tokenize("如何用 MoE-LoRA 微调模型? The Adapters are trained")
    assert {"moe", "lora", "微调", "模型", "adapters", "trained"} <= set(toks)
    assert not {"如何", "the", "are", "?", " ", "-"} & set(toks)
    assert "专家" in tokenize("混合专家")  # search mode yields sub-words of long words


def test_bm25_scores_chinese_queries(tmp_path):
    docs = ["负载均衡损失让每个专家的使用频率大致相同。", "量化到四比特以后显存占用降低。",
            "Gradient checkpointing saves memory.", "路由器为每个词元挑选两个专家。"]
    idx = SparseIndex.build([tokenize(d) for d in docs])
    hits = idx.search(tokenize("负载均衡有什么用"), k=3)
    assert hits and hits[0][0] == 0 and hits[0][1] > 0
    assert idx.search(tokenize("显存"), k=3)[0][0] == 1
    assert idx.search(tokenize("checkpointing memory"), k=3)[0][0] == 2
    assert idx.search(tokenize("完全无关的词语"), k=3) == []
    idx.save(tmp_path / "bm25")
    again = SparseIndex.load(tmp_path / "bm25")
    assert again.search(tokenize("负载均衡"), 3) == idx.search(tokenize("负载均衡"), 3)


def test_cjk_ratio():
    assert cjk_ratio("负载均衡") == 1.0 and cjk_ratio("load balance") == 0.0
    assert 0.2 < cjk_ratio("评测 CIDEr") < 0.5
