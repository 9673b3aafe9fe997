"""Text-file encoding detection for user CSVs (utf-8, utf-8-sig, gb18030/gbk, big5, utf-16).

Detection is charset-normalizer's (BOM first, then a statistical guess over the bytes), not a
try-this-then-that list: GBK bytes often decode "successfully" as another codec and give mojibake.
"""

from __future__ import annotations

from pathlib import Path

SAMPLE_BYTES = 1 << 20  # guess from the first MiB; the whole file is then decoded strictly

# Simplified-Chinese codecs are widened to their superset so rare characters still decode.
_WIDEN = {"gb2312": "gb18030", "gbk": "gb18030", "cp936": "gb18030", "hz": "gb18030"}


class EncodingError(ValueError):
    """The file's encoding could not be determined or the file does not decode (message names the file)."""


def detect_encoding(data: bytes, name: str = "<bytes>") -> str:
    """Python codec name for ``data`` (``utf-8-sig`` when a UTF-8 BOM is present)."""
    from charset_normalizer import from_bytes

    if not data:
        return "utf-8"
    best = from_bytes(data[:SAMPLE_BYTES]).best()
    if best is None:
        raise EncodingError(f"{name}: cannot determine the text encoding (not a text file?)")
    enc = best.encoding.lower().replace("-", "_")
    if enc == "utf_8":
        return "utf-8-sig" if best.bom else "utf-8"
    if enc == "ascii":
        return "utf-8"
    return _WIDEN.get(enc, enc)


def read_text(path: str | Path, encoding: str | None = None) -> tuple[str, str]:
    """(text, encoding): detected unless given; a decode error names the file and line."""
    path = Path(path)
    data = path.read_bytes()
    enc = encoding or detect_encoding(data, str(path))
    try:
        text = data.decode(enc)
    except (UnicodeDecodeError, LookupError) as e:
        start = getattr(e, "start", 0)
        line = data[:start].count(b"\n") + 1
        raise EncodingError(f"{path}: line {line}: does not decode as {enc} ({e.__class__.__name__}); "
                            "save the file as UTF-8") from None
    return text.lstrip("\ufeff"), enc
