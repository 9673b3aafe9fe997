"""Caption tokenisation for the metrics: Chinese words (jieba) and PTB-style English, no Java.

English follows what the COCO caption toolkit does with Stanford's PTBTokenizer: lower-case,
split clitics (``don't`` -> ``do n't``, ``dog's`` -> ``dog 's``), split punctuation off and drop
it. Runs of CJK characters are segmented into words with jieba, so a Chinese caption scores
on words rather than on one giant "token" (no spaces) or on single characters.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from functools import lru_cache

from vlft.data.vocab import CJK_CLASS as _CJK  # CJK ideographs, kana, hangul: scripts without spaces
_RUNS = re.compile(rf"([{_CJK}]+)")
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u00a0": " "})
_CLITIC_NT = re.compile(r"(\w)n't\b")
_CLITIC = re.compile(r"(\w)'(s|re|ve|m|ll|d)\b")
# A word: letters/digits joined by inner - ' . / (t-shirt, 3.5, u.s, and/or); or one other char.
_WORD = re.compile(r"n't|'(?:s|re|ve|m|ll|d)\b|\w+(?:[-./]\w+)*|\S")


def is_punct(token: str) -> bool:
    """Only punctuation characters (ASCII or CJK: ，。！？、“”《》 ...)."""
    return all(unicodedata.category(c).startswith("P") for c in token)


def tokenize_english(text: str) -> list[str]:
    text = text.translate(_QUOTES).lower()
    text = _CLITIC_NT.sub(r"\1 n't", text)
    text = _CLITIC.sub(r"\1 '\2", text)
    return [t for t in _WORD.findall(text) if not is_punct(t)]


@lru_cache(maxsize=1)
def _jieba():
    import jieba

    jieba.setLogLevel(logging.WARNING)  # it prints "Building prefix dict..." at INFO
    return jieba


def tokenize_chinese(text: str) -> list[str]:
    return [t for t in _jieba().lcut(text) if t.strip() and not is_punct(t)]


def tokenize(text: str) -> list[str]:
    """Words of a caption in any mix of Chinese and English."""
    text = unicodedata.normalize("NFKC", text or "")  # full-width letters/digits/punct -> ASCII forms
    tokens: list[str] = []
    for i, run in enumerate(_RUNS.split(text)):
        if not run:
            continue
        tokens += tokenize_chinese(run) if i % 2 else tokenize_english(run)
    return tokens


def tokenized(text: str) -> str:
    """Space-joined tokens: the pre-tokenised string the COCO scorers and sacrebleu(tokenize='none') take."""
    return " ".join(tokenize(text))
