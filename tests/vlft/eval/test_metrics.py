"""Our BLEU-1..4 / ROUGE-L / CIDEr-D equal sacrebleu's and pycocoevalcap's on the same tokens;
Chinese captions are scored on jieba words, English on PTB-style tokens."""

from __future__ import annotations

import pytest

from vlft.eval.metrics import bleu_scores, cider_d, rouge_l, score_captions
from vlft.eval.tokenize import tokenize, tokenized

PREDS = [
    "A man riding a horse on the beach.",
    "Two dogs play with a red ball in the park",
    "A kitchen with a stove and a refrigerator.",
    "a plate of food",
    "一只狗在草地上奔跑。",
    "一个男人骑着摩托车在路上行驶",
    "people are waiting to cross the street",
    "",                                             # an empty caption scores, it does not crash
]
REFS = [
    ["A man rides a horse along the beach.", "A person on a horse at the seashore",
     "a man riding a brown horse on a beach"],
    ["Two dogs playing with a ball.", "Dogs chase a red ball on the grass"],
    ["A small kitchen with a stove and a sink.", "an oven in a kitchen", "The kitchen has a fridge and stove.",
     "a kitchen that has a stove, sink and refrigerator"],
    ["A plate of food with broccoli and rice.", "a white plate holds some food", "food on a plate"],
    ["一只小狗在草地上奔跑。", "草地上有一只狗在跑"],
    ["一名男子在公路上骑摩托车。", "一个人骑着摩托车穿过雨中的道路", "男人在雾中骑摩托车"],
    ["Four people wait to cross the street at an intersection.", "People looking at a stop light."],
    ["A cat sleeping on a sofa.", "a cat on the couch"],
]


@pytest.fixture(scope="module")
def pretok():
    return [tokenized(p) for p in PREDS], [[tokenized(r) for r in rs] for rs in REFS]


def test_tokenizer_english_like_ptb():
    assert tokenize("The dog's toy isn't here, it's (maybe) on the T-shirt!") == \
        ["the", "dog", "'s", "toy", "is", "n't", "here", "it", "'s", "maybe", "on", "the", "t-shirt"]
    assert tokenize("A man, 3.5 feet tall... \u201cHello\u201d") == ["a", "man", "3.5", "feet", "tall", "hello"]


def test_tokenizer_chinese_words_and_mixed():
    assert tokenize("一只狗在草地上奔跑。") == ["一只", "狗", "在", "草地", "上", "奔跑"]
    toks = tokenize("A cat 坐在 the sofa 上面，很舒服！")
    assert toks[:2] == ["a", "cat"] and "sofa" in toks and "，" not in toks and "！" not in toks
    assert all(len(t) < 6 for t in tokenize("一个男人骑着摩托车在路上行驶"))  # words, not one blob
    assert tokenize("ＡＢＣ　ｄｏｇ") == ["abc", "dog"]                           # full-width -> ASCII


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_bleu_equals_sacrebleu(n, pretok):
    from sacrebleu.metrics import BLEU

    hyps, refs = pretok
    width = max(len(r) for r in refs)
    streams = [[rs[i] if i < len(rs) else None for rs in refs] for i in range(width)]  # variable #refs
    ref = BLEU(tokenize="none", smooth_method="none", max_ngram_order=n).corpus_score(hyps, streams).score / 100
    ours = bleu_scores([h.split() for h in hyps], [[r.split() for r in rs] for rs in refs])[f"BLEU-{n}"]
    assert ref > 0
    assert ours == pytest.approx(ref, abs=1e-9)


def test_cider_d_and_rouge_l_equal_pycocoevalcap(pretok):
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    hyps, refs = pretok
    gts = {i: rs for i, rs in enumerate(refs)}
    res = {i: [h] for i, h in enumerate(hyps)}
    cid_ref, cid_per_ref = Cider().compute_score(gts, res)
    rou_ref, rou_per_ref = Rouge().compute_score(gts, res)
    H, R = [h.split() for h in hyps], [[r.split() for r in rs] for rs in refs]
    cid, cid_per = cider_d(H, R)
    rou, rou_per = rouge_l(H, R)
    assert cid == pytest.approx(cid_ref, abs=1e-9) and cid > 0.5
    assert cid_per == pytest.approx(list(cid_per_ref), abs=1e-9)
    assert rou == pytest.approx(rou_ref, abs=1e-9)
    assert rou_per == pytest.approx(list(rou_per_ref), abs=1e-9)


def test_score_captions_end_to_end():
    scores, per = score_captions(PREDS[:3], REFS[:3])
    assert set(scores) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr-D"}
    perfect, _ = score_captions([REFS[0][0], REFS[1][0]], [REFS[0], REFS[1]])
    assert perfect["BLEU-4"] == pytest.approx(1.0) and perfect["ROUGE-L"] == pytest.approx(1.0)
    chinese, _ = score_captions(["一只狗在草地上奔跑"], [["一只小狗在草地上奔跑。"]])
    assert 0 < chinese["BLEU-1"] < 1 and chinese["ROUGE-L"] > 0.7
    with pytest.raises(ValueError, match="at least one reference"):
        score_captions(["x"], [[]])
