"""csv2json: an ``image_path,caption`` CSV -> training (and validation) JSON/JSONL.

Rows are grouped by image before the split, so no validation image is ever trained on. The train
file has one sample per caption (every caption is a training target); the val file has one sample
per image whose assistant turn is the first caption and whose ``references`` field lists all of
them (evaluation scores against every reference). See docs/data.md for the formats.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import os
import random
from collections import Counter
from pathlib import Path
from typing import Literal

from vlft.config import BaseConfig, field, require
from vlft.data.encoding import read_text
from vlft.data.images import image_problem
from vlft.data.vocab import find_special_token, skip_counts
from vlft.errors import UserError
from vlft.paths import DEFAULT_CAPTION_PROMPT
from vlft.utils.io import atomic_write, write_json, write_jsonl

log = logging.getLogger(__name__)

Format = Literal["messages", "conversations"]
IMAGE_COLUMNS = ("image_path", "image", "file_name", "filename", "path")
CAPTION_COLUMNS = ("caption", "text", "description")


class CsvError(UserError, ValueError):
    """The CSV cannot be used at all (missing file, columns or encoding); message names the file."""


@dataclasses.dataclass
class CsvRow:
    line: int       # physical line in the CSV (header = 1), for error messages
    image: str      # as written in the CSV
    caption: str


def read_caption_csv(path: str | Path, encoding: str | None = None) -> tuple[list[CsvRow], str]:
    """Rows of a CSV with an image column and a caption column, and the encoding used.

    Column names are matched case-insensitively against IMAGE_COLUMNS / CAPTION_COLUMNS.
    """
    path = Path(path)
    if not path.is_file():
        raise CsvError(f"{path}: CSV file not found")
    text, enc = read_text(path, encoding)
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None:
        raise CsvError(f"{path}: empty file, expected a header row 'image_path,caption'")
    names = [h.strip().lower() for h in header]
    img_col = next((names.index(c) for c in IMAGE_COLUMNS if c in names), None)
    cap_col = next((names.index(c) for c in CAPTION_COLUMNS if c in names), None)
    if img_col is None or cap_col is None:
        need = [c for c, i in ((f"{IMAGE_COLUMNS[0]} (or {', '.join(IMAGE_COLUMNS[1:])})", img_col),
                               (f"{CAPTION_COLUMNS[0]} (or {', '.join(CAPTION_COLUMNS[1:])})", cap_col)) if i is None]
        raise CsvError(f"{path}: missing column {' and '.join(need)}; found columns: "
                       f"{', '.join(h for h in header) or 'none'}")
    rows = []
    for rec in reader:
        if not any(c.strip() for c in rec):
            continue
        get = lambda i: rec[i] if i < len(rec) else ""  # noqa: E731  short rows read as empty cells
        rows.append(CsvRow(reader.line_num, get(img_col).strip(), get(cap_col)))
    return rows, enc


def clean_caption(text: str) -> str:
    """Collapse whitespace (CSV exports carry stray newlines/tabs); empty stays empty."""
    return " ".join(text.split())


def val_path_for(json_path: str | Path) -> Path:
    """train.json -> val.json, coco_train.jsonl -> coco_val.jsonl, data.json -> data_val.json."""
    p = Path(json_path)
    stem = p.name[: -len(p.suffix)] if p.suffix else p.name
    i = stem.lower().rfind("train")
    new = stem[:i] + "val" + stem[i + 5:] if i >= 0 else stem + "_val"
    return p.with_name(new + p.suffix)


@dataclasses.dataclass
class Csv2JsonConfig(BaseConfig):
    """Convert an image_path,caption CSV into training (and validation) JSON or JSONL."""
    csv: str = field("coco_2014_caption/train.csv", "input CSV with image_path,caption columns")
    json: str = field("coco_2014_caption/train.json", "output file; .jsonl writes JSON Lines, else a JSON list")
    top_k: int | None = field(None, "use only the first K usable CSV rows (the seed's --top_k)")
    format: Format = field("messages", "record format (messages = the loader's own format)")
    prompt: str = field(DEFAULT_CAPTION_PROMPT, "user prompt put before each caption")
    val_ratio: float = field(0.0, "fraction of IMAGES held out for validation (0 = no val file)")
    seed: int = field(0, "seed for the train/val split (same seed + same CSV = same split)")
    val_json: str | None = field(None, "validation output (default: 'train' -> 'val' in --json's name)")
    image_root: str | None = field(None, "folder relative CSV image paths are under (default: the CSV's folder)")
    check_images: bool = field(True, "skip rows whose image file does not exist (one stat per image)")
    verify_images: bool = field(True, "decode each unique image once and skip unreadable ones (about 4 ms "
                                      "an image, in threads; --no-verify-images: existence check only)")
    absolute_paths: bool = field(False, "write absolute image paths (default: relative to the JSON's folder)")
    encoding: str | None = field(None, "CSV encoding (default: detected)")
    verbose: bool = field(False, "more log output")

    def validate(self) -> None:
        super().validate()
        require(bool(self.csv), "csv", "an input CSV is required")
        require(bool(self.json), "json", "an output path is required")
        require(self.top_k is None or self.top_k > 0, "top_k", "must be positive")
        require(0.0 <= self.val_ratio < 1.0, "val_ratio", "must be in [0, 1)")
        require(bool(self.prompt.strip()), "prompt", "must not be empty")
        src = Path(self.csv).resolve()
        require(Path(self.json).resolve() != src, "json", f"{self.json} is the input CSV; it would be overwritten")
        require(not self.val_json or Path(self.val_json).resolve() != src, "val_json",
                f"{self.val_json} is the input CSV; it would be overwritten")


@dataclasses.dataclass
class ConvertResult:
    train_path: Path
    val_path: Path | None
    n_train: int = 0                 # samples written to train
    n_val: int = 0                   # samples (= images) written to val
    n_images: int = 0
    encoding: str = ""
    skipped: Counter = dataclasses.field(default_factory=Counter)
    errors: list[str] = dataclasses.field(default_factory=list)
    rejects: list[tuple[str, int, str, str, str]] = dataclasses.field(default_factory=list)
    rejects_path: Path | None = None   # every skipped row (reason,line,image_path,caption,detail), if any

    def summary(self) -> str:
        line = f"wrote {self.n_train} train samples to {self.train_path}"
        if self.val_path is not None:
            line += f" and {self.n_val} val samples to {self.val_path}"
        return line + f" ({self.n_images} images); skipped {sum(self.skipped.values())} rows ({skip_counts(self.skipped)})"


def rejects_path_for(json_path: str | Path) -> Path:
    """train.json -> train.rejects.csv next to it (the same name download_data2csv uses)."""
    p = Path(json_path)
    return p.with_name((p.name[: -len(p.suffix)] if p.suffix else p.name) + ".rejects.csv")


def split_images(keys: list[str], val_ratio: float, seed: int) -> set[str]:
    """Deterministic held-out image set: shuffle a copy with ``seed``, take round(n * ratio)."""
    if val_ratio <= 0 or len(keys) < 2:
        return set()
    n_val = min(max(1, round(len(keys) * val_ratio)), len(keys) - 1)  # both files non-empty
    order = sorted(keys)                      # independent of CSV row order
    random.Random(seed).shuffle(order)
    return set(order[:n_val])


def make_record(fmt: Format, sample_id: str, image: str, prompt: str, caption: str,
                references: list[str] | None = None) -> dict:
    if fmt == "conversations":
        rec = {"id": sample_id, "image": image,
               "conversations": [{"from": "user", "value": f"<image>\n{prompt}"},
                                 {"from": "assistant", "value": caption}]}
    else:
        rec = {"id": sample_id, "messages": [
            {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": prompt}]},
            {"role": "assistant", "content": [{"type": "text", "text": caption}]}]}
    if references is not None:
        rec["references"] = references
    return rec


def csv_to_json(cfg: Csv2JsonConfig) -> ConvertResult:
    """Read, clean, group by image, split, write. Bad rows are skipped and counted, never fatal."""
    csv_path = Path(cfg.csv)
    rows, enc = read_caption_csv(csv_path, cfg.encoding)
    if not rows:  # a header alone: nothing to convert, and no empty training file to leave behind
        raise CsvError(f"{csv_path}: no data rows under the header")
    root = Path(cfg.image_root) if cfg.image_root else csv_path.parent
    out = Path(cfg.json)
    val_out = (Path(cfg.val_json) if cfg.val_json else val_path_for(out)) if cfg.val_ratio > 0 else None
    if val_out is not None and val_out.resolve() == out.resolve():
        raise CsvError(f"{out}: --val-json must differ from --json")
    res = ConvertResult(train_path=out, val_path=val_out, encoding=enc)

    groups: dict[str, list[str]] = {}        # abs image path -> captions, in CSV order
    exists: dict[str, str | None] = {}       # image -> problem or None; checked once however many rows use it
    seen: set[tuple[str, str]] = set()
    used = 0

    def skip(reason: str, row: CsvRow, msg: str) -> None:
        res.skipped[reason] += 1
        res.errors.append(f"{csv_path}: line {row.line}: {msg}")
        res.rejects.append((reason, row.line, row.image, row.caption, msg))

    # all images decoded up front in threads; with --top_k only those of the rows used, one by one
    problems = _image_problems(rows, root) if cfg.verify_images and cfg.top_k is None else {}
    for row in rows:
        if cfg.top_k is not None and used >= cfg.top_k:
            break
        caption = clean_caption(row.caption)
        if not caption:
            skip("empty_caption", row, "caption: empty")
            continue
        token = find_special_token(caption)
        if token:
            skip("special_token", row, f"caption: contains the model's control token {token} "
                                       "(it would end the training target early); remove it")
            continue
        if not row.image:
            skip("missing_image", row, "image_path: empty")
            continue
        img = _image_path(root, row.image)
        if "://" in row.image:   # a URL: passed through (the loader and the processor fetch it)
            img = row.image
        elif cfg.check_images or cfg.verify_images:
            if img not in exists:
                exists[img] = problems[img] if img in problems else image_problem(img) if cfg.verify_images \
                    else (None if os.path.isfile(img) else "file not found")
            problem = exists[img]
            if problem is not None:
                reason = "missing_image" if problem == "file not found" else "corrupt_image"
                skip(reason, row, f"image_path: {problem}: {img}")
                continue
        if (img, caption) in seen:
            skip("duplicate", row, f"duplicate of an earlier row ({row.image}, same caption)")
            continue
        seen.add((img, caption))
        groups.setdefault(img, []).append(caption)
        used += 1

    val_keys = split_images(list(groups), cfg.val_ratio, cfg.seed)
    res.n_images = len(groups)
    out_dir = str(out.parent.resolve())
    val_dir = str(val_out.parent.resolve()) if val_out is not None else out_dir
    ids: Counter = Counter()

    def ref(img: str, folder: str) -> str:
        if cfg.absolute_paths or "://" in img:
            return img
        try:
            rel = os.path.relpath(img, folder)
        except ValueError:   # other drive on Windows: no relative path exists
            return img
        return rel.replace(os.sep, "/")

    def new_id(img: str) -> str:
        stem = os.path.splitext(os.path.basename(img))[0]
        ids[stem] += 1
        return stem if ids[stem] == 1 else f"{stem}_{ids[stem] - 1}"

    train, val = [], []
    for img, caps in groups.items():
        if img in val_keys:
            val.append(make_record(cfg.format, new_id(img), ref(img, val_dir), cfg.prompt, caps[0], list(caps)))
        else:
            path = ref(img, out_dir)     # one relpath per image, not per caption
            for cap in caps:
                train.append(make_record(cfg.format, new_id(img), path, cfg.prompt, cap))
    _write(out, train)
    res.n_train = len(train)
    if val_out is not None:
        _write(val_out, val)
        res.n_val = len(val)
    for line in res.errors[:5]:
        log.warning("skipped %s", line)
    if len(res.errors) > 5:
        log.warning("... and %d more skipped rows", len(res.errors) - 5)
    target = rejects_path_for(out)
    if res.rejects:
        with atomic_write(target, newline="") as f:
            w = csv.writer(f)
            w.writerow(["reason", "line", "image_path", "caption", "detail"])
            w.writerows(res.rejects)
        res.rejects_path = target
    elif target.is_file():
        target.unlink()   # a stale list from an earlier run would name rows that are fine now
    return res


def _image_path(root: Path, image: str) -> str:
    return os.path.abspath(os.path.join(root, os.path.expanduser(image) if image.startswith("~") else image))


def _image_problems(rows: list[CsvRow], root: Path) -> dict[str, str | None]:
    """Decode each unique image once, in threads (PIL releases the GIL while decoding), with progress."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    images = list(dict.fromkeys(_image_path(root, r.image) for r in rows if r.image and "://" not in r.image))
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        found = list(tqdm(pool.map(image_problem, images), total=len(images), desc="checking images",
                          unit="image", disable=len(images) < 500 or None))
    return dict(zip(images, found))


def _write(path: Path, records: list[dict]) -> None:
    if path.suffix.lower() == ".jsonl":
        write_jsonl(path, records)
    else:
        write_json(path, records, indent=1)
