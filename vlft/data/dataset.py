"""Read a training/eval JSON(L) file into the normalized sample format.

Three record formats are accepted, auto-detected per record:

* messages       ``{"messages": [{"role", "content": [{"type": "image", "image"}, {"type": "text", "text"}]}]}``
* conversations  ``{"image" | "images", "conversations": [{"from", "value"}]}`` where each ``<image>``
                 placeholder in a value is replaced, in place, by the next image (LLaVA / Qwen recipe).
* seed           conversations whose user value is ``COCO Yes: <|vision_start|>PATH<|vision_end|>``
                 (the seed project's csv2json output); the embedded path becomes an image part.

Output (one dict per sample; see docs/data.md)::

    {"id": str, "messages": [{"role": "system"|"user"|"assistant",
                              "content": [{"type": "image", "image": "/abs/path"}, {"type": "text", "text": ...}]}],
     "references": [str, ...]}          # only when the record carries reference captions

Relative image paths resolve against ``image_folder``, else the JSON file's folder. A bad record
is skipped and counted with ONE error line naming file, line (JSONL) or item (JSON list) and field;
``strict=True`` raises on the first one instead.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from vlft.data.vocab import find_special_token
from vlft.errors import UserError

ROLES = ("system", "user", "assistant")
# "from" values seen in LLaVA / ShareGPT / Qwen recipes -> our roles.
ROLE_ALIASES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                "bot": "assistant", "model": "assistant", "system": "system"}
IMAGE_TOKEN = "<image>"
# Seed: "<|vision_start|>PATH<|vision_end|>"; Qwen-VL-Chat: "<img>PATH</img>" (empty = placeholder).
_EMBEDDED = re.compile(r"<\|vision_start\|>(.*?)<\|vision_end\|>|<img>(.*?)</img>", re.S)


class DataError(UserError, ValueError):
    """A data file or record is wrong; the message names file, line/item and field."""


class _RecordError(Exception):
    def __init__(self, field_name: str, message: str, reason: str = "bad_record"):
        super().__init__(message)
        self.field_name, self.message, self.reason = field_name, message, reason


@dataclass
class LoadResult:
    """Samples read from one file, plus what was skipped and why."""
    path: Path
    samples: list[dict] = field(default_factory=list)
    n_records: int = 0
    errors: list[str] = field(default_factory=list)          # one line per skipped record
    skipped: Counter = field(default_factory=Counter)        # reason -> count
    rejects: list[tuple[str, str]] = field(default_factory=list)  # (reason, line) per skipped record

    def reject(self, reason: str, line: str) -> None:
        """Count a skipped record (also used for samples dropped after loading, e.g. too long)."""
        self.errors.append(line)
        self.skipped[reason] += 1
        self.rejects.append((reason, line))

    def write_rejects(self, path: str | Path) -> Path | None:
        """Every skipped record to ``path`` (CSV: reason,detail); None (and no file) if there is none."""
        import csv

        from vlft.utils.io import atomic_write
        path = Path(path)
        if not self.rejects:
            path.unlink(missing_ok=True)   # an old list would name records that are fine now
            return None
        with atomic_write(path, newline="") as f:
            w = csv.writer(f)
            w.writerow(["reason", "detail"])
            w.writerows(self.rejects)
        return path

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[dict]:
        return iter(self.samples)

    def __getitem__(self, i: int) -> dict:
        return self.samples[i]

    def summary(self) -> str:
        line = f"{self.path}: loaded {len(self.samples)} samples"
        if self.n_skipped:
            reasons = ", ".join(f"{k}: {v}" for k, v in sorted(self.skipped.items()))
            line += f", skipped {self.n_skipped} ({reasons})"
        return line


def load_samples(path: str | Path, image_folder: str | Path | None = None, strict: bool = False,
                 check_images: bool = True) -> LoadResult:
    """Load a JSON list or JSONL file of messages / conversations / seed records.

    ``check_images`` makes a record whose image file is absent an error (skipped, reason
    ``missing_image``); pass False to skip the stat() per image when files live elsewhere.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: data file not found")
    base = Path(image_folder) if image_folder is not None else path.parent
    base = base.resolve()
    result = LoadResult(path=path)
    exists: dict[str, bool] = {}
    for where, record in _iter_records(path):
        result.n_records += 1
        if isinstance(record, _RecordError):
            err = record
        else:
            try:
                result.samples.append(normalize_record(record, base, default_id=f"{path.stem}-{where[1]}",
                                                       check_images=check_images, exists=exists))
                continue
            except _RecordError as e:
                err = e
        line = f"{path}: {where[0]} {where[1]}: {err.field_name}: {err.message}"
        if strict:
            raise DataError(line)
        result.reject(err.reason, line)
    return result


# -- reading ---------------------------------------------------------------------------------
def _iter_records(path: Path) -> Iterator[tuple[tuple[str, int], Any]]:
    """Yield ((\"line\"|\"item\", number), record or _RecordError). JSONL if .jsonl or not one JSON value."""
    from vlft.data.encoding import EncodingError, read_text
    try:   # JSON should be UTF-8, but a GBK / UTF-16 export from a Windows tool is read, not a traceback
        text, enc = read_text(path, hint="save it as UTF-8")
    except EncodingError as e:
        raise DataError(str(e)) from None
    if enc not in ("utf-8", "utf-8-sig"):
        import logging
        logging.getLogger(__name__).warning("%s: not UTF-8, read as %s", path, enc)
    if path.suffix.lower() != ".jsonl":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            if e.msg != "Extra data":   # one value per line -> fall through to JSONL
                raise DataError(f"{path}: line {e.lineno}: not valid JSON ({e.msg})") from None
        else:
            if isinstance(data, dict):
                data = [data]
            if not isinstance(data, list):
                raise DataError(f"{path}: top level must be a list of records, got {type(data).__name__}")
            for i, rec in enumerate(data):
                yield ("item", i), rec
            return
    for n, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            yield ("line", n), json.loads(raw)
        except json.JSONDecodeError as e:
            yield ("line", n), _RecordError("record", f"not valid JSON ({e.msg}, column {e.colno})", "bad_json")


# -- normalizing -----------------------------------------------------------------------------
def normalize_record(rec: Any, base: Path, default_id: str = "", check_images: bool = True,
                     exists: dict | None = None) -> dict:
    """One record (any accepted format) -> normalized sample; raises _RecordError.

    ``exists`` caches path -> isfile across records (many captions share one image).
    """
    if not isinstance(rec, dict):
        raise _RecordError("record", f"must be an object, got {type(rec).__name__}")
    if "messages" in rec:
        messages = _from_messages(rec, base)
    elif "conversations" in rec:
        messages = _from_conversations(rec, base)
    else:
        raise _RecordError("record", f"needs 'messages' or 'conversations' (keys: {', '.join(rec) or 'none'})")
    _validate(messages, "messages" if "messages" in rec else "conversations", check_images, exists)
    sample: dict[str, Any] = {"id": str(rec.get("id") if rec.get("id") is not None else default_id),
                              "messages": messages}
    if "references" in rec:
        refs = rec["references"]
        if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
            raise _RecordError("references", "must be a list of strings")
        sample["references"] = [r for r in refs if r.strip()]
    return sample


def _resolve(p: Any, base: Path, fld: str) -> str:
    """Absolute, normalized path (os.path, not pathlib: this runs once per image per record)."""
    if not isinstance(p, str) or not p.strip():
        raise _RecordError(fld, f"image must be a non-empty path string, got {p!r}")
    p = p.strip()
    if p.startswith("file://"):
        p = p[len("file://"):]
    if "://" in p:  # URLs are passed through: the processor (qwen-vl-utils) fetches them.
        return p
    return os.path.abspath(os.path.join(base, os.path.expanduser(p) if p.startswith("~") else p))


def _from_messages(rec: dict, base: Path) -> list[dict]:
    msgs = rec["messages"]
    if not isinstance(msgs, list) or not msgs:
        raise _RecordError("messages", "must be a non-empty list")
    top_images = _image_list(rec, base)
    out = []
    for i, m in enumerate(msgs):
        f = f"messages[{i}]"
        if not isinstance(m, dict):
            raise _RecordError(f, "must be an object with 'role' and 'content'")
        role = m.get("role")
        if role not in ROLES:
            raise _RecordError(f"{f}.role", f"{role!r} is not one of {', '.join(ROLES)}")
        content = m.get("content")
        if isinstance(content, str):   # plain string content; may carry <image> placeholders
            parts = _split_text(content, top_images, f"{f}.content")
        elif isinstance(content, list):
            parts = []
            for j, part in enumerate(content):
                parts.extend(_part(part, base, f"{f}.content[{j}]", top_images))
        else:
            raise _RecordError(f"{f}.content", "must be a string or a list of parts")
        out.append({"role": role, "content": parts})
    if top_images:
        raise _RecordError("images", f"{len(top_images)} image(s) listed but no <image> placeholder left for them")
    return out


def _part(part: Any, base: Path, f: str, top_images: list[str]) -> list[dict]:
    if isinstance(part, str):
        return _split_text(part, top_images, f)
    if not isinstance(part, dict):
        raise _RecordError(f, "must be an object with a 'type'")
    t = part.get("type")
    if t == "text":
        if not isinstance(part.get("text"), str):
            raise _RecordError(f"{f}.text", "must be a string")
        return [{"type": "text", "text": part["text"]}]
    if t in ("image", "image_url"):
        img = part.get("image", part.get("image_url"))
        if isinstance(img, dict):  # OpenAI style {"image_url": {"url": ...}}
            img = img.get("url")
        if img is None and top_images:   # {"type": "image"} with the path in the record's "images"
            return [{"type": "image", "image": top_images.pop(0)}]
        return [{"type": "image", "image": _resolve(img, base, f"{f}.image")}]
    raise _RecordError(f"{f}.type", f"{t!r} is not one of text, image")


def _image_list(rec: dict, base: Path) -> list[str]:
    key = "images" if "images" in rec else "image" if "image" in rec else None
    if key is None:
        return []
    imgs = rec[key]
    if isinstance(imgs, str):
        imgs = [imgs]
    if not isinstance(imgs, list):
        raise _RecordError(key, "must be a path or a list of paths")
    return [_resolve(p, base, f"{key}[{i}]") for i, p in enumerate(imgs)]


def _split_text(text: str, images: list[str], f: str) -> list[dict]:
    """Text with ``<image>`` placeholders -> parts; each placeholder takes the next listed image.

    Text around a placeholder is stripped: ``"<image>\\nDescribe"`` -> [image, text "Describe"].
    """
    chunks = text.split(IMAGE_TOKEN)
    parts: list[dict] = []
    for k, chunk in enumerate(chunks):
        if k > 0:
            if not images:
                raise _RecordError(f, f"has more {IMAGE_TOKEN} placeholders than listed images")
            parts.append({"type": "image", "image": images.pop(0)})
        chunk = chunk.strip() if len(chunks) > 1 else chunk
        if chunk:
            parts.append({"type": "text", "text": chunk})
    return parts


def _from_conversations(rec: dict, base: Path) -> list[dict]:
    conv = rec["conversations"]
    if not isinstance(conv, list) or not conv:
        raise _RecordError("conversations", "must be a non-empty list")
    images = _image_list(rec, base)
    n_listed = len(images)
    n_placeholders = sum(str(t.get("value", "")).count(IMAGE_TOKEN) for t in conv if isinstance(t, dict))
    if images and n_placeholders == 0:
        # No placeholder at all: images go in front of the first user turn (Qwen recipe convention).
        first_user = next((i for i, t in enumerate(conv) if isinstance(t, dict)
                           and ROLE_ALIASES.get(str(t.get("from", t.get("role", ""))).lower()) == "user"), None)
        if first_user is None:
            raise _RecordError("conversations", "has images but no user turn to attach them to")
    elif n_placeholders != n_listed:
        raise _RecordError("conversations", f"{n_placeholders} {IMAGE_TOKEN} placeholder(s) but {n_listed} image(s) "
                                            "listed in 'image'/'images'")
    else:
        first_user = None
    out = []
    for i, turn in enumerate(conv):
        f = f"conversations[{i}]"
        if not isinstance(turn, dict):
            raise _RecordError(f, "must be an object with 'from' and 'value'")
        raw_role = turn.get("from", turn.get("role"))
        role = ROLE_ALIASES.get(str(raw_role).lower()) if raw_role is not None else None
        if role is None:
            raise _RecordError(f"{f}.from", f"{raw_role!r} is not one of {', '.join(ROLE_ALIASES)}")
        value = turn.get("value", turn.get("content"))
        if not isinstance(value, str):
            raise _RecordError(f"{f}.value", "must be a string")
        parts: list[dict] = []
        if i == first_user:
            parts += [{"type": "image", "image": p} for p in images]
            images = []
        parts += _embedded(value, base, f"{f}.value", images)
        out.append({"role": role, "content": parts})
    return out


def _embedded(value: str, base: Path, f: str, images: list[str]) -> list[dict]:
    """Seed / Qwen-VL-Chat embedded paths, then ``<image>`` placeholders.

    The seed's training put the image before the prompt (``[image, "COCO Yes:"]``) whatever the
    text order, so embedded images go first: the prompt the model learned stays the same.
    """
    found = [(m.group(1) if m.group(1) is not None else m.group(2)) for m in _EMBEDDED.finditer(value)]
    if not found:
        return _split_text(value, images, f)
    parts = []
    rest = _EMBEDDED.sub(" ", value).strip()
    for p in found:
        if p.strip():
            parts.append({"type": "image", "image": _resolve(p, base, f)})
        elif images:     # "<img></img>" used as a bare placeholder
            parts.append({"type": "image", "image": images.pop(0)})
        else:
            raise _RecordError(f, "empty <img></img> with no listed image")
    return parts + _split_text(rest, images, f)


def _validate(messages: list[dict], top: str, check_images: bool, exists: dict | None = None) -> None:
    exists = {} if exists is None else exists
    if not any(m["role"] == "user" for m in messages):
        raise _RecordError(top, "has no user turn")
    if not any(m["role"] == "assistant" for m in messages):
        raise _RecordError(top, "has no assistant turn")
    for i, m in enumerate(messages):
        if not m["content"]:
            raise _RecordError(f"{top}[{i}]", f"{m['role']} turn is empty", "empty_text")
        if m["role"] == "assistant" and not any(p["type"] == "text" and p["text"].strip() for p in m["content"]):
            raise _RecordError(f"{top}[{i}]", "assistant turn has no text", "empty_text")
        token = next((t for t in (find_special_token(p["text"]) for p in m["content"] if p["type"] == "text") if t),
                     None)
        if token:   # tokenized as the control token itself: "<|im_end|>" would end the labels early
            raise _RecordError(f"{top}[{i}]", f"text contains the model's control token {token}; remove it",
                               "special_token")
        if check_images:
            for p in m["content"]:
                if p["type"] != "image" or "://" in p["image"]:
                    continue
                ok = exists.get(p["image"])
                if ok is None:
                    ok = exists[p["image"]] = os.path.isfile(p["image"])
                if not ok:
                    raise _RecordError(f"{top}[{i}]", f"image not found: {p['image']}", "missing_image")
