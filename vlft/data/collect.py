"""download_data2csv: gather (image, caption) pairs from a source into ``image_path,caption`` CSV.

Sources (name -> factory in SOURCES), each yielding one ``Candidate`` per image:
  modelscope  the seed's ModelScope dataset (``modelscope/coco_2014_caption``), streamed
  coco-json   an official COCO captions annotation file + a folder of images (some may be absent)
  folder      images with sidecar ``.txt`` captions (one per line), or a ``captions.csv`` inside

Every image is decoded once before it is kept (truncated / non-image files are rejected), copied or
saved under ``image_dir``; a re-run keeps images already there that still decode (resumable). Rows
that cannot be used are counted by reason and listed in ``<output>.rejects.csv``.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator

from vlft.config import BaseConfig, field, require
from vlft.data.convert import clean_caption, read_caption_csv
from vlft.data.images import IMAGE_EXTENSIONS, image_problem
from vlft.data.vocab import SKIP_REASONS, find_special_token, skip_counts
from vlft.errors import UserError
from vlft.utils.io import atomic_write

log = logging.getLogger(__name__)

REASONS = SKIP_REASONS
MS_DATASET = "modelscope/coco_2014_caption"


class CollectError(UserError, RuntimeError):
    """The source cannot be read at all (one line naming it)."""


@dataclasses.dataclass
class Candidate:
    """One source image and its captions."""
    name: str                               # file name under image_dir (unique per image)
    captions: list[str]
    origin: str                             # where it came from, for the rejects file
    path: Path | None = None                # source file, if on disk
    save: Callable[[Path], None] | None = None  # writes the image to a path (in-memory sources)
    missing: str | None = None              # known-missing detail (annotation without an image entry)
    no_caption: str | None = None           # why there is no caption at all (image without a .txt)
    caption_error: str | None = None        # the caption file exists but cannot be read / decoded


# -- sources ---------------------------------------------------------------------------------
def coco_json_source(annotations: str | Path, images: str | Path) -> Iterator[Candidate]:
    """Official COCO captions JSON: ``images[].file_name`` + ``annotations[].{image_id, caption}``."""
    import json

    annotations, images = Path(annotations), Path(images)
    try:
        data = json.loads(annotations.read_text(encoding="utf-8-sig"))
        entries, anns = data["images"], data["annotations"]
    except FileNotFoundError:
        raise CollectError(f"{annotations}: annotation file not found") from None
    except (ValueError, KeyError, TypeError) as e:
        raise CollectError(f"{annotations}: not a COCO captions file ({e.__class__.__name__}: {e})") from None
    caps: dict[Any, list[str]] = {}
    for a in anns:
        caps.setdefault(a.get("image_id"), []).append(str(a.get("caption") or ""))
    known = set()
    for e in entries:
        known.add(e.get("id"))
        name = str(e.get("file_name") or f"{e.get('id')}.jpg")
        yield Candidate(name=Path(name).name, captions=caps.get(e.get("id"), [""]),
                        origin=f"{annotations.name}: image id {e.get('id')}", path=images / name)
    for image_id, c in caps.items():
        if image_id not in known:
            yield Candidate(name=f"{image_id}.jpg", captions=c, origin=f"{annotations.name}: image id {image_id}",
                            missing=f"image id {image_id} has captions but no entry in 'images'")


def folder_source(folder: str | Path, encoding: str | None = None) -> Iterator[Candidate]:
    """``captions.csv`` in the folder (paths relative to it, or to its ``images/``), else sidecar .txt.

    ``encoding``: of the caption files (default: detected per file)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CollectError(f"{folder}: folder not found")
    table = folder / "captions.csv"
    if table.is_file():
        rows, _ = read_caption_csv(table, encoding)
        grouped: dict[str, list[str]] = {}
        for r in rows:
            grouped.setdefault(r.image, []).append(r.caption)
        for image, captions in grouped.items():
            p = folder / image
            if not p.is_file() and (folder / "images" / image).is_file():
                p = folder / "images" / image
            yield Candidate(name=_flat_name(image), captions=captions, origin=f"{table.name}: {image}", path=p)
        return
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    images = {p.with_suffix(""): p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS}
    texts = {p.with_suffix(""): p for p in files if p.suffix.lower() == ".txt"}
    for stem in sorted(set(images) | set(texts)):
        rel = (images.get(stem) or texts[stem]).relative_to(folder).as_posix()
        captions = [""]
        no_caption = caption_error = None
        if stem in texts:
            from vlft.data.encoding import EncodingError, read_text
            try:
                lines = [ln for ln in read_text(texts[stem], encoding)[0].splitlines() if ln.strip()]
                captions = lines or [""]
            except (EncodingError, OSError) as e:   # one unreadable caption file: this image only
                caption_error = str(e)
        else:
            no_caption = f"no caption file ({Path(rel).with_suffix('.txt').name})"
        yield Candidate(name=_flat_name(rel), captions=captions, origin=rel, path=images.get(stem),
                        missing=None if stem in images else f"caption file {texts[stem].name} has no image",
                        no_caption=no_caption, caption_error=caption_error)


def modelscope_source(dataset: str = MS_DATASET, split: str = "train", subset: str | None = "coco_2014_caption",
                      streaming: bool = True, probe_timeout: float = 3.0) -> Iterator[Candidate]:
    """The seed's ModelScope dataset: rows of ``{image_id, caption, image (PIL)}``, one caption each.

    Streaming reads only the rows used (the full split is many GB); the ``datasets`` package is
    needed by ``MsDataset``.
    """
    from vlft.hub import HubError, hub_url, probe

    try:
        probe(hub_url("modelscope"), timeout=probe_timeout,
              hint="check the network or proxy, or use an offline source: --coco-json or --folder")
    except HubError as e:
        raise CollectError(f"ModelScope dataset {dataset}: {e}") from None
    try:
        from modelscope.msdatasets import MsDataset
    except ImportError as e:
        raise CollectError(f"ModelScope datasets need an extra package ({e}); run: pip install datasets") from None
    try:
        ds = MsDataset.load(dataset, subset_name=subset, split=split, use_streaming=streaming)
    except Exception as e:  # hub errors come in many types; one line for the user
        raise CollectError(f"ModelScope dataset {dataset}: load failed ({e.__class__.__name__}: "
                           f"{str(e).strip().splitlines()[0] if str(e).strip() else ''})") from None
    for i, row in enumerate(ds):
        image_id = row.get("image_id", i)
        image = row.get("image")

        def save(dest: Path, image=image) -> None:
            _save_image(image, dest)

        yield Candidate(name=f"{image_id}.jpg", captions=[str(row.get("caption") or "")],
                        origin=f"{dataset}[{split}] row {i}", save=save)


def _save_image(image: Any, dest: Path) -> None:
    """A dataset row's image (PIL image, {"bytes"/"path"} dict, or path) -> file at ``dest``."""
    if isinstance(image, dict):       # datasets' undecoded Image feature
        image = image.get("bytes") or image.get("path")
    if image is None:
        raise OSError("row has no image")
    if isinstance(image, (bytes, bytearray)):
        with atomic_write(dest, "wb") as f:
            f.write(image)
    elif isinstance(image, (str, Path)):
        with atomic_write(dest, "wb") as f, open(image, "rb") as src:
            shutil.copyfileobj(src, f)
    else:                             # PIL image
        with atomic_write(dest, "wb") as f:
            image.convert("RGB").save(f, format="JPEG", quality=95)


def _flat_name(rel: str) -> str:
    """sub/dir/a.jpg -> sub__dir__a.jpg: one flat image_dir without name clashes."""
    return "__".join(Path(rel).parts)


SOURCES: dict[str, Callable[..., Iterator[Candidate]]] = {
    "modelscope": modelscope_source, "coco-json": coco_json_source, "folder": folder_source,
}


# -- config and stage ------------------------------------------------------------------------------
@dataclasses.dataclass
class DownloadDataConfig(BaseConfig):
    """Collect image/caption pairs into an image_path,caption CSV (ModelScope, COCO JSON or a folder)."""
    output: str = field("coco_2014_caption/train.csv", "output CSV (image paths relative to its folder)")
    image_dir: str | None = field(None, "where images are saved (default: <output folder>/images)")
    max_samples: int = field(500, "stop after this many CSV rows")
    all_captions: bool = field(False, "one row per caption (default: the first caption of each image)")
    coco_json: str | None = field(None, "official COCO captions JSON (offline source; needs --images)")
    images: str | None = field(None, "folder with the images that --coco-json refers to")
    folder: str | None = field(None, "folder of images with sidecar .txt captions, or a captions.csv (offline)")
    encoding: str | None = field(None, "encoding of --folder caption files (default: detected per file)")
    dataset: str = field(MS_DATASET, "ModelScope dataset id (used when no offline source is given)")
    split: str = field("train", "ModelScope split")
    subset: str | None = field("coco_2014_caption", "ModelScope subset name")
    streaming: bool = field(True, "stream ModelScope rows instead of downloading the whole split")
    verbose: bool = field(False, "more log output")

    def validate(self) -> None:
        super().validate()
        require(self.max_samples > 0, "max_samples", "must be positive")
        require(not (self.coco_json and self.folder), "coco_json", "give --coco-json or --folder, not both")
        require(not self.coco_json or bool(self.images), "images", "--coco-json needs --images DIR")
        require(self.output.lower().endswith(".csv"), "output", f"{self.output!r} must end in .csv")
        out = Path(self.output).resolve()
        sources = [Path(self.coco_json).resolve()] if self.coco_json else []
        if self.folder:
            sources.append((Path(self.folder) / "captions.csv").resolve())
        require(out not in sources, "output", f"{self.output} is the source captions file; it would be overwritten")

    @property
    def source(self) -> str:
        return "coco-json" if self.coco_json else "folder" if self.folder else "modelscope"

    def open_source(self) -> Iterator[Candidate]:
        if self.source == "coco-json":
            return coco_json_source(self.coco_json, self.images)
        if self.source == "folder":
            return folder_source(self.folder, self.encoding)
        return modelscope_source(self.dataset, self.split, self.subset, self.streaming)


@dataclasses.dataclass
class CollectResult:
    output: Path
    rejects: Path
    written: int = 0
    images_saved: int = 0      # copied/saved this run
    images_reused: int = 0     # already in image_dir and still decodable (resume)
    skipped: Counter = dataclasses.field(default_factory=Counter)

    def summary(self) -> str:
        return f"written {self.written}, skipped {sum(self.skipped.values())} ({skip_counts(self.skipped)})"


def rejects_path(output: str | Path) -> Path:
    p = Path(output)
    return p.with_name(p.stem + ".rejects.csv")


def collect(cfg: DownloadDataConfig) -> CollectResult:
    """Run one source into the CSV + image folder + rejects file."""
    from tqdm import tqdm

    out = Path(cfg.output)
    image_dir = Path(cfg.image_dir) if cfg.image_dir else out.parent / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    res = CollectResult(output=out, rejects=rejects_path(out))
    rows: list[tuple[str, str]] = []
    rejects: list[tuple[str, str, str, str]] = []    # reason, origin, caption, detail
    seen: set[tuple[str, str]] = set()       # (image name, casefolded caption) already written
    names: set[str] = set()                  # image names already written

    def reject(reason: str, cand: Candidate, caption: str, detail: str) -> None:
        res.skipped[reason] += 1
        rejects.append((reason, cand.origin, caption, detail))

    bar = tqdm(total=cfg.max_samples, unit="row", desc="collect", disable=None)
    try:
        for cand in cfg.open_source():
            if len(rows) >= cfg.max_samples:
                break
            if not cfg.all_captions and cand.name in names:
                continue  # one caption per image: later rows of a written image are not wanted
            keep = _pick_captions(cand, cfg.all_captions, seen, reject)
            if not keep:
                continue
            keep = keep[: cfg.max_samples - len(rows)]
            dest = image_dir / cand.name
            problem = _store_image(cand, dest, res)
            if problem is not None:
                reason, detail = problem
                for c in keep:
                    reject(reason, cand, c, detail)
                continue
            rel = Path(os.path.relpath(dest.resolve(), out.parent.resolve())).as_posix()
            for c in keep:
                seen.add((cand.name, c.casefold()))
                rows.append((rel, c))
            names.add(cand.name)
            bar.update(len(keep))
    finally:
        bar.close()

    with atomic_write(out, newline="") as f:
        w = csv.writer(f)
        w.writerow(["image_path", "caption"])
        w.writerows(rows)
    with atomic_write(res.rejects, newline="") as f:
        w = csv.writer(f)
        w.writerow(["reason", "source", "caption", "detail"])
        w.writerows(rejects)
    res.written = len(rows)
    log.debug("images: %d saved, %d already present; rejects listed in %s",
             res.images_saved, res.images_reused, res.rejects)
    return res


def _pick_captions(cand: Candidate, all_captions: bool, seen: set, reject: Callable) -> list[str]:
    """Cleaned captions to write for this image; empties and repeats are rejected (counted)."""
    keep: list[str] = []
    if cand.no_caption:
        reject("empty_caption", cand, "", cand.no_caption)
        return keep
    if cand.caption_error:
        reject("bad_caption_file", cand, "", cand.caption_error)
        return keep
    for raw in cand.captions:
        c = clean_caption(raw)
        if not c:
            if all_captions or not any(clean_caption(x) for x in cand.captions):
                reject("empty_caption", cand, raw, "caption is empty")
            continue
        token = find_special_token(c)
        if token:
            reject("special_token", cand, c, f"caption contains the model's control token {token} "
                                              "(it would end the training target early)")
            continue
        key = (cand.name, c.casefold())
        if key in seen or c.casefold() in {k.casefold() for k in keep}:
            reject("duplicate", cand, c, "same image and caption as an earlier row")
            continue
        keep.append(c)
        if not all_captions:
            break
    return keep


def _store_image(cand: Candidate, dest: Path, res: CollectResult) -> tuple[str, str] | None:
    """Make ``dest`` a verified copy of the candidate's image; (reason, detail) if impossible."""
    if dest.is_file() and image_problem(dest) is None:
        res.images_reused += 1           # resume: saved by an earlier run and still decodes
        return None
    if cand.missing:
        return "missing_image", cand.missing
    if cand.path is not None:
        if not cand.path.is_file():
            return "missing_image", f"file not found: {cand.path}"
        problem = image_problem(cand.path)
        if problem is not None:
            return "corrupt_image", f"{cand.path}: {problem}"
        with atomic_write(dest, "wb") as f, cand.path.open("rb") as src:
            shutil.copyfileobj(src, f)
    elif cand.save is not None:
        try:
            cand.save(dest)
        except Exception as e:  # a broken row in a remote dataset must not stop the run
            return "corrupt_image", f"cannot save image ({e.__class__.__name__}: {e})"
        problem = image_problem(dest)
        if problem is not None:
            dest.unlink(missing_ok=True)
            return "corrupt_image", problem
    else:
        return "missing_image", "no image in the source record"
    res.images_saved += 1
    return None
