"""Caption / answer with a Qwen-VL model (base, merged, or base + adapter).

``VLGenerator`` is the one inference component: test.py, evaluation, the benchmark and the
desktop assistant's chat model all call it. Messages use the normalized sample format::

    [{"role": "user", "content": [{"type": "image", "image": "/abs/a.jpg"},
                                  {"type": "text", "text": "COCO Yes:"}]}]

Images may be paths, ``file://`` / ``http(s)://`` URLs or PIL images. Only one generation
runs at a time per generator (a lock), so a GUI thread and a worker can share it.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from vlft.config import BaseConfig, require
from vlft.data.images import URL_TIMEOUT_S, ImageError, load_image  # noqa: F401 (re-exported)
from vlft.data.vocab import IMAGE_EXTENSIONS, message_text
from vlft.config import field as cfield
from vlft.models.loading import (DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS, Precision, load_model,
                                 load_processor, resolve_precision)
from vlft.paths import DEFAULT_CAPTION_PROMPT

log = logging.getLogger(__name__)

Message = dict[str, Any]
Conversation = list[Message]

# One image loader and one extension list for every stage (vlft.data); the old names stay importable.
ImageLoadError = ImageError
IMAGE_EXTS = IMAGE_EXTENSIONS


def load_conversation_images(messages: Conversation) -> tuple[Conversation, list]:
    """Copy of ``messages`` with each image part replaced by a placeholder, plus the PIL images in order.

    The chat template only needs ``{"type": "image"}`` to emit the vision tokens; the pixels go
    to the processor separately so each image is opened exactly once, with a clear error.
    """
    out: Conversation = []
    images = []
    for msg in messages:
        content = msg.get("content")
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        parts = []
        for part in content or []:
            if part.get("type") == "image" or ("image" in part and part.get("type") is None):
                images.append(load_image(part.get("image", part.get("url", part.get("path")))))
                parts.append({"type": "image"})
            elif part.get("type") == "text":
                parts.append({"type": "text", "text": part.get("text", "")})
            else:
                raise ValueError(f"message part of type {part.get('type')!r} is not supported "
                                 "(use 'image' or 'text')")
        out.append({"role": msg["role"], "content": parts})
    return out, images


def caption_messages(images: Sequence[Any], prompt: str) -> Conversation:
    """One user turn: the images, then the prompt (the layout the training data uses)."""
    content = [{"type": "image", "image": im} for im in images]
    content.append({"type": "text", "text": prompt})
    return [{"role": "user", "content": content}]


def strip_answers(messages: Conversation) -> Conversation:
    """Drop trailing assistant turns (a validation sample carries its reference answer)."""
    msgs = list(messages)
    while msgs and msgs[-1].get("role") == "assistant":
        msgs.pop()
    return msgs


def list_images(folder: str | Path) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


# -- streaming and cancellation ----------------------------------------------------------------
def _make_streamer(tokenizer, on_token: Callable[[str], None]):
    from transformers import TextStreamer

    class _CallbackStreamer(TextStreamer):
        # TextStreamer already holds back partial words / multi-byte characters until they decode.
        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            if text:
                on_token(text)

    return _CallbackStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)


def _make_stop_criteria(stop_event: threading.Event):
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _EventStop(StoppingCriteria):
        # Checked after every decoding step: cancellation costs at most one forward pass.
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), stop_event.is_set(), dtype=torch.bool,
                              device=input_ids.device)

    return StoppingCriteriaList([_EventStop()])


# -- generator --------------------------------------------------------------------------------
class VLGenerator:
    """A loaded model + processor that turns conversations into text.

    ``precision``: a ``Precision``, ``None`` (device default: 4-bit on CUDA, fp32 on CPU), or one
    of ``"4bit" | "8bit" | "none"`` (quantization; dtype from the device).
    """

    def __init__(self, model_dir: str | Path, adapter: str | Path | None = None,
                 precision: Precision | str | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                 min_pixels: int | None = DEFAULT_MIN_PIXELS):
        if precision is None or isinstance(precision, str):
            precision = resolve_precision(quant=precision)
        self.model_dir = Path(model_dir)
        self.adapter = Path(adapter) if adapter else None
        self.precision = precision
        model = load_model(model_dir, precision)
        if adapter:
            from vlft.adapters.loading import load_adapter
            model = load_adapter(model, adapter)
        self._setup(model, load_processor(model_dir, max_pixels=max_pixels, min_pixels=min_pixels))

    @classmethod
    def from_model(cls, model, processor) -> "VLGenerator":
        """Wrap an already loaded model (e.g. during training or in tests)."""
        self = cls.__new__(cls)
        self.model_dir = Path(getattr(model, "name_or_path", "") or ".")
        self.adapter = None
        self.precision = None
        self._setup(model, processor)
        return self

    def _setup(self, model, processor) -> None:
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.tokenizer.padding_side = "left"
        self._lock = threading.Lock()

    @property
    def device(self):
        return next(self.model.parameters()).device

    # -- public API ---------------------------------------------------------------------------
    def generate(self, messages: Conversation, max_new_tokens: int = 128, temperature: float = 0.0,
                 top_p: float = 1.0, on_token: Callable[[str], None] | None = None,
                 stop_event: threading.Event | None = None) -> str:
        """Answer one conversation. ``on_token`` receives text pieces as they are decoded;
        setting ``stop_event`` ends generation after the current step (returns the text so far)."""
        streamer = _make_streamer(self.tokenizer, on_token) if on_token else None
        stops = _make_stop_criteria(stop_event) if stop_event is not None else None
        return self._run([messages], max_new_tokens, temperature, top_p, streamer, stops)[0]

    def generate_batch(self, conversations: Sequence[Conversation], max_new_tokens: int = 128,
                       temperature: float = 0.0, top_p: float = 1.0, batch_size: int = 8) -> list[str]:
        """Answer many conversations, ``batch_size`` at a time (left-padded)."""
        out: list[str] = []
        for chunk in batched(conversations, batch_size):
            out.extend(self._run(chunk, max_new_tokens, temperature, top_p, None, None))
        return out

    def build_inputs(self, conversations: Sequence[Conversation]):
        """Tokenized, padded model inputs for a batch (images loaded and resized here)."""
        return self._encode(*self._load(conversations))

    def _load(self, conversations: Sequence[Conversation]) -> tuple[list[str], list]:
        """Prompt texts (chat template applied) and the batch's images, in order."""
        texts, images = [], []
        for conv in conversations:
            conv, imgs = load_conversation_images(conv)
            texts.append(self.processor.apply_chat_template(conv, tokenize=False,
                                                            add_generation_prompt=True))
            images.extend(imgs)
        return texts, images

    def _encode(self, texts: list[str], images: list):
        inputs = self.processor(text=texts, images=images or None, padding=True, return_tensors="pt")
        return inputs.to(self.device)

    # -- internals ------------------------------------------------------------------------------
    def _generation_kwargs(self, max_new_tokens: int, temperature: float, top_p: float) -> dict:
        from transformers import GenerationConfig

        base = getattr(self.model, "generation_config", None)
        ids = {k: getattr(base, k, None) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
        if ids["pad_token_id"] is None:
            ids["pad_token_id"] = self.tokenizer.pad_token_id
        # A fresh config: the model card's sampling defaults (top_k=20, T=0.7) must not leak into greedy.
        cfg = GenerationConfig(max_new_tokens=int(max_new_tokens), **ids)
        if temperature and temperature > 0:
            cfg.do_sample, cfg.temperature, cfg.top_p = True, float(temperature), float(top_p)
        else:
            # Neutral values, else generate() fills the model card's T=0.7/top_k=20 back in and warns.
            cfg.do_sample, cfg.temperature, cfg.top_p, cfg.top_k = False, 1.0, 1.0, 50
        return {"generation_config": cfg}

    def _run(self, conversations, max_new_tokens, temperature, top_p, streamer, stops) -> list[str]:
        import torch

        texts, images = self._load(conversations)  # file/URL reads happen outside the lock
        kwargs = self._generation_kwargs(max_new_tokens, temperature, top_p)
        if streamer is not None:
            kwargs["streamer"] = streamer
        if stops is not None:
            kwargs["stopping_criteria"] = stops
        # The lock also covers the tokenizer: HF fast tokenizers raise "Already borrowed" when
        # two threads use one at once.
        with self._lock, torch.inference_mode():
            inputs = self._encode(texts, images)
            out = self.model.generate(**inputs, **kwargs)
            new_tokens = out[:, inputs["input_ids"].shape[1]:]  # left padding: prompts end together
            return self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)


def batched(items: Sequence[Any] | Iterable[Any], n: int) -> Iterable[list[Any]]:
    if n < 1:
        raise ValueError("batch_size: must be at least 1")
    chunk: list[Any] = []
    for it in items:
        chunk.append(it)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# -- captioning many items (test.py --data_path, evaluation) ---------------------------------------
@dataclass
class PredictResult:
    """Predictions for the items that could be read, plus one line per skipped item."""
    rows: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def n_skipped(self) -> int:
        return len(self.errors)


def _with_loaded_images(conv: Conversation) -> Conversation:
    """The conversation with every image opened (PIL), so a bad file fails here, alone."""
    out = []
    for msg in conv:
        content = msg.get("content")
        if isinstance(content, list):
            content = [dict(p, image=load_image(p["image"])) if p.get("type") == "image" else p
                       for p in content]
        out.append(dict(msg, content=content))
    return out


def predict(generator: "VLGenerator", items: Sequence[dict], batch_size: int = 8, max_new_tokens: int = 128,
            temperature: float = 0.0, top_p: float = 1.0, progress: bool = True,
            desc: str = "captioning") -> PredictResult:
    """Generate for ``items`` ({"id", "messages", ...}) in batches; an unreadable image skips its item.

    Each output row is the item without ``messages`` plus ``prediction``.
    """
    from tqdm.auto import tqdm

    res = PredictResult()
    bar = tqdm(total=len(items), desc=desc, unit="img", disable=not progress, leave=False)
    for chunk in batched(items, batch_size):
        ready, convs = [], []
        for it in chunk:
            try:
                convs.append(_with_loaded_images(strip_answers(it["messages"])))
                ready.append(it)
            except ImageError as e:
                res.errors.append(f"{it.get('id', '?')}: {e}")
                log.debug("skipped %s: %s", it.get("id", "?"), e)
        if convs:
            outs = generator.generate_batch(convs, max_new_tokens=max_new_tokens, temperature=temperature,
                                            top_p=top_p, batch_size=len(convs))
            for it, text in zip(ready, outs):
                row = {k: v for k, v in it.items() if k != "messages"}
                row["prediction"] = text.strip()
                res.rows.append(row)
        bar.update(len(chunk))
    bar.close()
    return res


def items_from_folder(folder: str | Path, prompt: str) -> list[dict]:
    """One caption item per image file in ``folder`` (sorted by name)."""
    imgs = list_images(folder)
    if not imgs:
        raise ValueError(f"{folder}: no image files ({', '.join(IMAGE_EXTENSIONS)})")
    return [{"id": p.stem, "image": str(p), "messages": caption_messages([str(p.resolve())], prompt)}
            for p in imgs]


def group_by_image(items: list[dict]) -> list[dict]:
    """One item per distinct question (same images, same prompt), references merged in order.

    One-caption-per-record files (the seed's format, csv2json without --val-ratio) list an image
    once per caption; scored as they are, 2 images with 3 and 5 captions would count as 8 images
    with one reference each, and CIDEr-D's document frequencies would be skewed.
    """
    groups: dict[str, dict] = {}
    for it in items:
        key = json.dumps(it["messages"], sort_keys=True, ensure_ascii=False, default=str)
        g = groups.get(key)
        if g is None:
            groups[key] = dict(it, references=list(dict.fromkeys(it["references"])))
        else:
            g["references"] += [r for r in it["references"] if r not in g["references"]]
    return list(groups.values())


def items_from_split(path: str | Path, image_folder: str | Path | None = None,
                     prompt: str | None = None) -> tuple[list[dict], list[str]]:
    """Samples of a JSON/JSONL split as prediction items, with their references; plus skip lines.

    References: the sample's ``references`` list when present, else its assistant answers. With
    ``prompt`` set, the user text is replaced by it (images kept). Records asking the same question
    about the same image(s) become one item with all their references (``group_by_image``).
    """
    from vlft.data.dataset import load_samples

    loaded = load_samples(path, image_folder=image_folder)
    items = []
    for s in loaded.samples:
        msgs = s["messages"]
        answers = [message_text(m) for m in msgs if m["role"] == "assistant"]
        refs = [r for r in (s.get("references") or answers[-1:]) if r.strip()]
        conv = strip_answers(msgs)
        images = [p["image"] for m in conv for p in m["content"] if p.get("type") == "image"]
        if prompt is not None:
            conv = [m for m in conv if m["role"] == "system"] + caption_messages(images, prompt)
        items.append({"id": s["id"], "image": images[0] if len(images) == 1 else images,
                      "references": refs, "messages": conv})
    return group_by_image(items), list(loaded.errors)


# -- test.py -----------------------------------------------------------------------------------
@dataclass
class InferConfig(BaseConfig):
    """Caption or question images with a Qwen-VL model (base, merged, or base + adapter)."""

    model: str = cfield("./qwen3-vl-4b-instruct", "base or merged model folder",
                        aliases=("model_name_or_path", "model_dir"))
    adapter: str | None = cfield(None, "LoRA / DoRA / IA3 / MoE-LoRA adapter folder (none: the model as is)")
    image: list[str] = cfield(default_factory=list, doc=(
        "image file or URL; repeat for several images in one question; a folder captions each image in it"))
    prompt: str = cfield(DEFAULT_CAPTION_PROMPT, "question / instruction after the image(s) "
                         "(default: the caption prompt used in training)")
    system: str | None = cfield(None, "optional system message")
    max_new_tokens: int = cfield(128, "most tokens to generate per answer")
    temperature: float = cfield(0.0, "sampling temperature; 0 = greedy")
    top_p: float = cfield(1.0, "nucleus sampling mass (with temperature > 0)")
    stream: bool = cfield(False, "print tokens as they are generated (one question)")
    data_path: str | None = cfield(None, "JSON/JSONL split or image folder to caption in batches")
    image_folder: str | None = cfield(None, "folder that relative image paths in --data_path are under")
    use_data_prompt: bool = cfield(False, "with --data_path: keep each sample's own user text "
                                   "instead of --prompt")
    batch_size: int = cfield(8, "images per generate() call with --data_path")
    output: str | None = cfield(None, "write predictions here as JSONL (batch mode)")
    max_pixels: int = cfield(DEFAULT_MAX_PIXELS, "largest image area in pixels (same as training)")
    min_pixels: int = cfield(DEFAULT_MIN_PIXELS, "smallest image area in pixels")
    load_in_4bit: bool | None = cfield(None, "4-bit NF4 weights (default: on with CUDA, off on CPU)")
    verbose: bool = cfield(False, "debug logging")

    def validate(self) -> None:
        super().validate()
        require(self.max_new_tokens > 0, "max_new_tokens", "must be positive")
        require(self.temperature >= 0, "temperature", "must be >= 0")
        require(0 < self.top_p <= 1, "top_p", "must be in (0, 1]")
        require(self.batch_size > 0, "batch_size", "must be positive")
        require(self.max_pixels > 0 and self.min_pixels > 0, "max_pixels", "pixel bounds must be positive")
        require(self.min_pixels <= self.max_pixels, "min_pixels", "must not exceed max_pixels")
        require(bool(self.image) or self.data_path is not None, "image",
                "give --image (file, folder or URL) or --data_path")
        require(not (self.image and self.data_path), "data_path", "use either --image or --data_path")
        require(not (self.output and self.data_path and Path(self.output).resolve() == Path(self.data_path).resolve()),
                "output", f"{self.output} is the --data_path split; it would be overwritten")

    @property
    def quant(self) -> str | None:
        return None if self.load_in_4bit is None else ("4bit" if self.load_in_4bit else "none")


def run_inference(cfg: InferConfig, out=None) -> int:
    """test.py: one question (printed, optionally streamed) or a batch captioning run."""
    import sys

    out = out or sys.stdout
    for src in cfg.image:  # fail before the (slow) model load
        if not src.startswith(("http://", "https://")) and not Path(src.removeprefix("file://")).exists():
            raise ImageError(f"{src}: image file not found")
    gen = VLGenerator(cfg.model, adapter=cfg.adapter, precision=cfg.quant, max_pixels=cfg.max_pixels,
                      min_pixels=cfg.min_pixels)
    sampling = dict(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p)
    folder = cfg.image[0] if len(cfg.image) == 1 and Path(cfg.image[0]).is_dir() else None
    if cfg.data_path is None and folder is None:
        msgs = caption_messages(cfg.image, cfg.prompt)
        if cfg.system:
            msgs.insert(0, {"role": "system", "content": [{"type": "text", "text": cfg.system}]})
        if cfg.stream:
            gen.generate(msgs, on_token=lambda t: (out.write(t), out.flush()), **sampling)
            out.write("\n")
        else:
            out.write(gen.generate(msgs, **sampling).strip() + "\n")
        return 0

    src = folder or cfg.data_path
    if Path(src).is_dir():
        items, errors = items_from_folder(src, cfg.prompt), []
    else:
        items, errors = items_from_split(src, cfg.image_folder,
                                         prompt=None if cfg.use_data_prompt else cfg.prompt)
    res = predict(gen, items, batch_size=cfg.batch_size, **sampling)
    errors += res.errors
    if cfg.output:
        from vlft.utils.io import write_jsonl
        write_jsonl(cfg.output, res.rows)
    else:
        for row in res.rows:
            out.write(json.dumps({"id": row["id"], "prediction": row["prediction"]}, ensure_ascii=False) + "\n")
    for line in errors:
        print(f"skipped: {line}", file=sys.stderr)
    summary = f"captioned {len(res.rows)} of {len(items) + len(errors) - len(res.errors)} items"
    if errors:
        summary += f", skipped {len(errors)}"
    if cfg.output:
        summary += f" -> {cfg.output}"
    print(summary, file=sys.stderr)
    return 0 if res.rows else 1
