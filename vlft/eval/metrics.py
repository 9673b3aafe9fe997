"""Caption metrics on token lists: corpus BLEU-1..4, ROUGE-L and CIDEr-D.

Pure Python, scored against ALL references of each image. The definitions are those of the
reference implementations and are tested equal to them on the same tokens:

* BLEU-n: corpus BLEU as sacrebleu computes it (clipped n-gram counts summed over the corpus,
  closest reference length for the brevity penalty, no smoothing), with n-gram order n.
* ROUGE-L: pycocoevalcap's ``Rouge`` (LCS, best precision and best recall over the references,
  F-measure with beta = 1.2), averaged over images.
* CIDEr-D: pycocoevalcap's ``Cider`` (which is CIDEr-D: tf-idf n-grams 1..4 with document
  frequencies from this corpus' references, clipped hypothesis counts, Gaussian length penalty
  sigma = 6, x10), averaged over images.

Scores are fractions (BLEU 0..1, ROUGE-L 0..1, CIDEr-D 0..10), as the COCO toolkit reports them.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Sequence

Tokens = Sequence[str]


def ngrams(tokens: Tokens, n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


# -- BLEU ----------------------------------------------------------------------------------------
def _closest_ref_len(hyp_len: int, ref_lens: Sequence[int]) -> int:
    # Ties go to the shorter reference (sacrebleu / mteval).
    return min(ref_lens, key=lambda r: (abs(hyp_len - r), r))


def corpus_bleu(hyps: Sequence[Tokens], refs: Sequence[Sequence[Tokens]], max_n: int = 4) -> float:
    """Corpus BLEU with n-grams up to ``max_n`` (0..1)."""
    correct, total = [0] * max_n, [0] * max_n
    sys_len = ref_len = 0
    for hyp, rs in zip(hyps, refs, strict=True):
        sys_len += len(hyp)
        ref_len += _closest_ref_len(len(hyp), [len(r) for r in rs])
        for n in range(1, max_n + 1):
            h = ngrams(hyp, n)
            best: Counter = Counter()
            for r in rs:
                best |= ngrams(r, n)  # max count of each n-gram over the references
            correct[n - 1] += sum(min(c, best[g]) for g, c in h.items())
            total[n - 1] += max(len(hyp) - n + 1, 0)
    if sys_len == 0 or not all(correct):
        return 0.0  # unsmoothed BLEU: any empty n-gram order gives 0
    bp = 1.0 if sys_len >= ref_len else math.exp(1 - ref_len / sys_len)
    return bp * math.exp(sum(math.log(c / t) for c, t in zip(correct, total)) / max_n)


def bleu_scores(hyps: Sequence[Tokens], refs: Sequence[Sequence[Tokens]], max_n: int = 4) -> dict[str, float]:
    return {f"BLEU-{n}": corpus_bleu(hyps, refs, n) for n in range(1, max_n + 1)}


# -- ROUGE-L --------------------------------------------------------------------------------------
def lcs_length(a: Tokens, b: Tokens) -> int:
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l_one(hyp: Tokens, refs: Sequence[Tokens], beta: float = 1.2) -> float:
    # An empty caption counts as one empty token, as in the reference (" ".split(" ") == [""]).
    hyp = list(hyp) or [""]
    precs, recs = [], []
    for r in refs:
        r = list(r) or [""]
        lcs = lcs_length(r, hyp)
        precs.append(lcs / len(hyp))
        recs.append(lcs / len(r))
    p, r = max(precs), max(recs)
    if p == 0 or r == 0:
        return 0.0
    return (1 + beta ** 2) * p * r / (r + beta ** 2 * p)


def rouge_l(hyps: Sequence[Tokens], refs: Sequence[Sequence[Tokens]]) -> tuple[float, list[float]]:
    per = [rouge_l_one(h, rs) for h, rs in zip(hyps, refs, strict=True)]
    return (sum(per) / len(per) if per else 0.0), per


# -- CIDEr-D --------------------------------------------------------------------------------------
def _counts(tokens: Tokens, n: int) -> Counter:
    out: Counter = Counter()
    for k in range(1, n + 1):
        out.update(ngrams(tokens, k))
    return out


def cider_d(hyps: Sequence[Tokens], refs: Sequence[Sequence[Tokens]], n: int = 4,
            sigma: float = 6.0) -> tuple[float, list[float]]:
    """CIDEr-D over the corpus (mean) and per image."""
    hyp_c = [_counts(h, n) for h in hyps]
    ref_c = [[_counts(r, n) for r in rs] for rs in refs]
    if len(hyp_c) != len(ref_c):
        raise ValueError("cider_d: hypotheses and references differ in number")
    df: dict[tuple, float] = defaultdict(float)
    for rs in ref_c:
        for g in {g for r in rs for g in r}:
            df[g] += 1
    log_n = math.log(float(len(ref_c))) if ref_c else 0.0

    def vec(cnts: Counter):
        v = [dict() for _ in range(n)]
        norm = [0.0] * n
        length = 0
        for g, tf in cnts.items():
            k = len(g) - 1
            w = float(tf) * (log_n - math.log(max(1.0, df[g])))
            v[k][g] = w
            norm[k] += w * w
            if k == 1:  # the reference counts bigrams as "length" (kept for equal scores)
                length += tf
        return v, [math.sqrt(x) for x in norm], length

    def sim(vh, nh, lh, vr, nr, lr):
        delta = float(lh - lr)
        out = []
        for k in range(n):
            s = sum(min(w, vr[k].get(g, 0.0)) * vr[k].get(g, 0.0) for g, w in vh[k].items())
            if nh[k] != 0 and nr[k] != 0:
                s /= nh[k] * nr[k]
            out.append(s * math.exp(-(delta ** 2) / (2 * sigma ** 2)))
        return out

    per = []
    for hc, rcs in zip(hyp_c, ref_c):
        vh, nh, lh = vec(hc)
        total = [0.0] * n
        for rc in rcs:
            for k, s in enumerate(sim(vh, nh, lh, *vec(rc))):
                total[k] += s
        per.append(sum(total) / n / len(rcs) * 10.0)
    return (sum(per) / len(per) if per else 0.0), per


# -- all together ---------------------------------------------------------------------------------
METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr-D")


def score_tokens(hyps: Sequence[Tokens], refs: Sequence[Sequence[Tokens]]) -> tuple[dict[str, float], dict]:
    """Corpus scores, and per-item ROUGE-L / CIDEr-D lists."""
    scores = bleu_scores(hyps, refs)
    scores["ROUGE-L"], rouge_per = rouge_l(hyps, refs)
    scores["CIDEr-D"], cider_per = cider_d(hyps, refs)
    return scores, {"ROUGE-L": rouge_per, "CIDEr-D": cider_per}


def score_captions(predictions: Sequence[str], references: Sequence[Sequence[str]],
                   tokenizer=None) -> tuple[dict[str, float], dict]:
    """Tokenise (Chinese words / PTB-style English) and score; every item needs >= 1 reference."""
    from vlft.eval.tokenize import tokenize

    tok = tokenizer or tokenize
    if any(not rs for rs in references):
        raise ValueError("score_captions: every prediction needs at least one reference caption")
    hyps = [tok(p) for p in predictions]
    refs = [[tok(r) for r in rs] for rs in references]
    return score_tokens(hyps, refs)
