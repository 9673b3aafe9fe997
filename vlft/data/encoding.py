"""Text-file encoding detection: one detector for the whole project (data stages, retrieval loaders).

Order: byte-order mark -> strict UTF-8 -> charset-normalizer's statistical guess, with East-Asian
readings re-ranked. Short Chinese text is where plain detectors fail: "滑板" in GBK is four bytes
that also decode as Big5, CP949 or even UTF-8, and charset-normalizer picks one of those. Each
CJK reading is therefore scored by how common it is:

* the share of its characters in the codec's frequent-character block (GB2312 level 1, Big5
  level 1, the KS X 1001 Hangul block, JIS level 1 + kana): both national standards list the
  common characters first, so mojibake lands in the rare blocks;
* for a simplified-Chinese reading, how much of it jieba's dictionary segments into real
  multi-character words, and how frequent its characters are.

When two readings still score about the same, ``detect_encoding`` says so in one warning line and
keeps the better one; ``--encoding`` (``read_text(encoding=...)``) decides.
"""

from __future__ import annotations

import codecs
import logging
import math
from pathlib import Path

from vlft.data.vocab import HAN_RE
from vlft.errors import UserError

log = logging.getLogger(__name__)

SAMPLE_BYTES = 1 << 20  # guess from the first MiB; the whole file is then decoded strictly
SCORE_BYTES = 8192      # CJK readings are ranked on this much
_ASCII_BYTES = bytes(range(128))

# Simplified-Chinese codecs are widened to their superset so rare characters still decode.
_WIDEN = {"gb2312": "gb18030", "gbk": "gb18030", "cp936": "gb18030", "hz": "gb18030"}
# (byte order mark, codec), longest first: UTF-32 LE's BOM starts with UTF-16 LE's.
_BOMS = [(codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")]
# CJK codecs re-ranked by commonness; others (cp1252, koi8_r, ...) are left to charset-normalizer.
_CJK_FAMILY = {"gb18030": "gb18030", "gbk": "gb18030", "gb2312": "gb18030", "cp936": "gb18030",
               "big5": "big5", "big5hkscs": "big5", "cp950": "big5",
               "cp949": "cp949", "euc_kr": "cp949", "johab": "cp949",
               "shift_jis": "cp932", "cp932": "cp932", "shift_jis_2004": "cp932", "euc_jp": "cp932",
               "euc_jis_2004": "cp932"}
_ALWAYS_TRY = ("gb18030", "big5")
# Equal scores: a Chinese project's captions are most likely GBK, then Big5 (still warned as ambiguous).
_PREFER = {"gb18030": 0.02, "big5": 0.01}
# Below this many non-ASCII bytes the statistical guess is unreliable; above it, it is trusted
# unless a Chinese reading is clearly more common.
SHORT_BYTES = 64
AMBIGUOUS_MARGIN = 0.15


class EncodingError(UserError, ValueError):
    """The file's encoding could not be determined or the file does not decode (message names the file)."""


def _frequent(codec: str, ch: str) -> bool:
    """Is ``ch`` in the codec's block of frequent characters (by its 2-byte code)?"""
    try:
        b = ch.encode(codec)
    except UnicodeEncodeError:
        return False
    if len(b) != 2:
        return codec == "cp932" and len(b) == 1 and 0xA1 <= b[0] <= 0xDF   # half-width kana
    lead, trail = b
    if codec == "gb18030":      # GB2312 level 1 hanzi, plus punctuation/kana/letters rows A1-A9
        return trail >= 0xA1 and (0xB0 <= lead <= 0xD7 or 0xA1 <= lead <= 0xA9)
    if codec == "big5":         # level 1 hanzi A440-C67E, symbols A140-A3BF
        code = lead << 8 | trail
        return 0xA140 <= code <= 0xC67E
    if codec == "cp949":        # KS X 1001 Hangul syllables B0A1-C8FE, symbols A1-AC
        return trail >= 0xA1 and (0xB0 <= lead <= 0xC8 or 0xA1 <= lead <= 0xAC)
    if codec == "cp932":        # kana/symbols 81-84, JIS level 1 kanji 889F-9872
        code = lead << 8 | trail
        return 0x8140 <= code <= 0x84BE or 0x889F <= code <= 0x9872
    return False


def _jieba_words(text: str) -> float:
    """0..1: share of the Han characters that jieba's dictionary puts in multi-character words,
    weighted by how common those words and characters are (simplified Chinese only)."""
    han_runs = "".join(c if HAN_RE.match(c) else " " for c in text).split()
    n = sum(len(r) for r in han_runs)
    if not n:
        return 0.0
    from vlft.eval.tokenize import _jieba
    jb = _jieba()
    jb.dt.check_initialized()   # FREQ is empty until the dictionary is loaded
    freq = jb.dt.FREQ
    score = 0.0
    for run in han_runs:
        for w in jb.lcut(run, HMM=False):
            f = freq.get(w, 0)
            if len(w) > 1 and f > 0:
                score += len(w)
            else:
                score += len(w) * min(math.log1p(f) / math.log1p(100_000), 1.0) * 0.25
    return score / n


def reading_score(data: bytes, codec: str) -> float:
    """How plausible ``data`` decoded with ``codec`` is (-inf: does not decode). Scores the first
    SCORE_BYTES: the ranking needs a few thousand characters, not a whole document."""
    chunk = data[:SCORE_BYTES]
    try:
        text = chunk.decode(codec)
    except UnicodeDecodeError as e:
        if len(data) <= SCORE_BYTES or e.start < len(chunk) - 4:
            return float("-inf")
        try:                      # the cut fell inside a character
            text = chunk[:e.start].decode(codec)
        except UnicodeDecodeError:
            return float("-inf")
    except LookupError:
        return float("-inf")
    family = _CJK_FAMILY.get(codec.lower().replace("-", "_"), codec)
    wide = [c for c in text if ord(c) > 127 and not c.isspace()]
    if not wide:
        return 0.0
    common = sum(_frequent(family, c) for c in wide) / len(wide)
    if family == "gb18030":
        bonus = _jieba_words(text)
    elif family == "cp949":     # Korean text is mostly Hangul syllables; mojibake mixes in hanja/symbols
        bonus = 0.5 * (common >= 0.9 and len(wide) > 1 and sum("\uac00" <= c <= "\ud7a3" for c in wide) / len(wide) >= 0.9)
    elif family == "cp932":     # Japanese text has hiragana; Chinese read as Shift-JIS rarely does
        bonus = 0.5 * any("\u3041" <= c <= "\u309f" for c in wide)
    else:
        bonus = 0.0
    return common + bonus + _PREFER.get(family, 0.0)


def _bom(data: bytes) -> str | None:
    return next((codec for bom, codec in _BOMS if data.startswith(bom)), None)


def _utf8_implausible(text: str) -> bool:
    """A strict-UTF-8 reading that looks like GBK bytes read as UTF-8 ("一只猫" -> "һֻè"): combining
    marks or control characters, or letters of two scripts (Cyrillic next to Hebrew next to Latin)."""
    import unicodedata

    wide = [c for c in text if ord(c) > 127]
    if any(unicodedata.category(c)[0] in "MC" for c in wide):
        return True
    scripts = {unicodedata.name(c, "?").split()[0] for c in wide if unicodedata.category(c).startswith("L")}
    if len(scripts) > 1:
        return True
    # accented Latin letters stand inside words ("café"); a lone "è" is more likely GBK "猫"
    return scripts == {"LATIN"} and not any(
        ord(c) > 127 and ((i > 0 and text[i - 1].isascii() and text[i - 1].isalpha())
                          or (i + 1 < len(text) and text[i + 1].isascii() and text[i + 1].isalpha()))
        for i, c in enumerate(text))


def detect_encoding(data: bytes, name: str = "<bytes>") -> str:
    """Python codec name for ``data`` (``utf-8-sig`` / ``utf-16`` / ``utf-32`` with a BOM).

    Warns in one line when two CJK readings are about equally plausible (pass ``--encoding``).
    """
    if not data:
        return "utf-8"
    bom = _bom(data)
    if bom:
        return bom
    sample = data[:SAMPLE_BYTES]
    wide_bytes = len(sample.translate(None, _ASCII_BYTES))   # bytes >= 0x80
    if wide_bytes == 0:
        return "utf-8"
    try:
        utf8 = sample.decode("utf-8")
    except UnicodeDecodeError as e:
        cut = len(data) > len(sample) and e.reason == "unexpected end of data"  # sample ends mid-character
        utf8 = sample[:e.start].decode("utf-8") if cut else None
    if utf8 is not None and not (wide_bytes < SHORT_BYTES and _utf8_implausible(utf8)):
        # plausible UTF-8 loses only to a reading made entirely of common Chinese words
        if wide_bytes >= SHORT_BYTES or reading_score(sample, "gb18030") < 1.9:
            return "utf-8"
        return "gb18030"
    from charset_normalizer import from_bytes

    guesses = [m.encoding.lower() for m in from_bytes(sample)]
    if not guesses and utf8 is None and not any(reading_score(sample, c) > 0 for c in _ALWAYS_TRY):
        raise EncodingError(f"{name}: cannot determine the text encoding (not a text file?)")
    best = guesses[0] if guesses else None
    short = wide_bytes < SHORT_BYTES
    cands = [c for c in dict.fromkeys(([best] if best else []) + [g for g in guesses if g in _CJK_FAMILY]
                                      + list(_ALWAYS_TRY)) if c]
    scores = {c: reading_score(sample, c) for c in cands}
    if utf8 is not None:
        scores["utf-8"] = 0.5   # a decodable UTF-8 reading wins unless a CJK reading is clearly common
    if best is not None and best not in _CJK_FAMILY and not short:
        # a long non-CJK text (cp1252, koi8-r, ...): charset-normalizer knows better than CJK scores
        top = max(scores, key=scores.get)
        return _norm(top if top in _CJK_FAMILY and scores[top] > 1.2 else best)
    ranked = sorted(scores, key=lambda c: -scores[c])
    top = ranked[0]
    if scores[top] == float("-inf"):
        raise EncodingError(f"{name}: cannot determine the text encoding (not a text file?)")
    if not short and best is not None and top != best and scores[top] < scores.get(best, 0) + AMBIGUOUS_MARGIN:
        top = best      # long text: the statistical guess stands unless clearly beaten
    second = next((c for c in ranked if c != top and _norm(c) != _norm(top)), None)
    if (short and second is not None and scores[second] > 0
            and scores[top] - scores[second] < AMBIGUOUS_MARGIN):
        log.warning("%s: text encoding is ambiguous (%s or %s); reading it as %s - pass --encoding %s "
                    "if the text looks wrong", name, _norm(top), _norm(second), _norm(top), _norm(second))
    return _norm(top)


def _norm(enc: str) -> str:
    enc = enc.lower().replace("-", "_")
    if enc == "utf_8":
        return "utf-8"
    if enc == "ascii":
        return "utf-8"
    return _WIDEN.get(enc, enc)


def decode_text(data: bytes, name: str = "<bytes>", encoding: str | None = None,
                hint: str = "save the file as UTF-8 or pass --encoding") -> tuple[str, str]:
    """(text, encoding) of bytes: detected unless given; a decode error names the file and line."""
    enc = encoding or detect_encoding(data, name)
    try:
        text = data.decode(enc)
    except (UnicodeDecodeError, LookupError) as e:
        start = getattr(e, "start", 0)
        line = data[:start].count(b"\n") + 1
        raise EncodingError(f"{name}: line {line}: does not decode as {enc} ({e.__class__.__name__}); "
                            f"{hint}") from None
    return text.lstrip("\ufeff"), enc


def read_text(path: str | Path, encoding: str | None = None, **kw) -> tuple[str, str]:
    """(text, encoding) of a file: detected unless given; a decode error names the file and line."""
    path = Path(path)
    return decode_text(path.read_bytes(), str(path), encoding, **kw)
