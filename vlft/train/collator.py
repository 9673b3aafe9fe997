"""Samples -> model batches: chat template, assistant-only labels, lazy image preprocessing.

Each sample is rendered with the model's own chat template, then tokenized by the
processor (which expands ``<|image_pad|>`` to the image's real token count). Labels are
``-100`` everywhere except the content of every assistant turn plus its ``<|im_end|>``:

    <|im_start|>assistant\\n  A cat on a mat.<|im_end|>  \\n
    ------- masked ------  ------ labelled -----------  masked

Assistant spans are found on token ids (``<|im_start|>`` ``assistant`` ``\\n`` ... ``<|im_end|>``)
so they are exact whatever the template adds around them. The vendored Qwen3-VL-4B-Instruct
template and the Qwen2.5-VL one render assistant turns verbatim (no ``<think>`` block); the
Qwen3 "thinking" templates insert an empty ``<think>\\n\\n</think>\\n\\n`` into the last assistant
turn, which is masked here when the message itself does not contain it.

Images are decoded and resized in the collator (the seed cached pixel values as float lists,
~4 MB a sample); lengths are estimated up front from the image header only. So an image whose
header parses but whose pixels do not (a truncated JPEG) is first found here: its row is replaced
by the same text without images and with every label masked (the batch keeps its size, the loss
of the other rows is unchanged), and the trainer names the file once (``BadImageLog``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from vlft.data.vocab import IGNORE_INDEX, message_parts, message_text

_parts = message_parts


class SampleError(ValueError):
    """A sample cannot be encoded (reason is a short key used for skip counts)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


# -- message helpers ---------------------------------------------------------------------------
def sample_images(sample: dict) -> list[Any]:
    """Image references (path or PIL image) in template order."""
    out = []
    for m in sample["messages"]:
        for p in _parts(m):
            if p.get("type") == "video" or "video" in p:
                raise SampleError("video", "video parts are not supported for training")
            if p.get("type") == "image" or "image" in p:
                out.append(p.get("image"))
    return out


def load_image(ref: Any):
    """PIL RGB image (fully decoded) from a path or an already-open image; SampleError('bad_image')."""
    from vlft.data.images import ImageError
    from vlft.data.images import load_image as _load
    try:
        return _load(ref)
    except ImageError as e:
        raise SampleError("bad_image", f"image {e}") from None


def image_size(ref: Any) -> tuple[int, int]:
    """(height, width) from the file header, without decoding pixels."""
    from PIL import Image
    if isinstance(ref, Image.Image):
        return ref.height, ref.width
    try:
        with Image.open(ref) as im:
            return im.height, im.width
    except (OSError, ValueError, Image.DecompressionBombError) as e:  # a bomb is not an OSError
        raise SampleError("bad_image", f"image {ref}: cannot be read ({e.__class__.__name__}: {e})") from None


# -- label spans --------------------------------------------------------------------------------
@dataclass(frozen=True)
class TemplateTokens:
    """Token ids that delimit chat turns in Qwen templates."""
    im_start: int
    im_end: int
    assistant: tuple[int, ...]
    newline: int
    think_start: int | None
    think_end: int | None

    @classmethod
    def from_tokenizer(cls, tok) -> "TemplateTokens":
        def tid(t: str) -> int | None:
            i = tok.convert_tokens_to_ids(t)
            return None if i is None or i == tok.unk_token_id else i
        im_start, im_end = tid("<|im_start|>"), tid("<|im_end|>")
        if im_start is None or im_end is None:
            raise ValueError("tokenizer has no <|im_start|>/<|im_end|> tokens: not a Qwen chat model")
        (newline,) = tok.encode("\n", add_special_tokens=False)
        return cls(im_start=im_start, im_end=im_end,
                   assistant=tuple(tok.encode("assistant", add_special_tokens=False)),
                   newline=newline, think_start=tid("<think>"), think_end=tid("</think>"))


def assistant_spans(ids: Sequence[int], tt: TemplateTokens, assistant_texts: Sequence[str] = (),
                    tokenizer=None) -> list[tuple[int, int]]:
    """Half-open [start, end) token spans to label: each assistant turn's content + <|im_end|>.

    ``assistant_texts`` (one per assistant turn) lets an empty ``<think></think>`` block that the
    template added, but the message did not contain, be masked.
    """
    spans = []
    n, a = len(ids), len(tt.assistant)
    i = 0
    turn = 0
    while i < n:
        if ids[i] == tt.im_start and tuple(ids[i + 1:i + 1 + a]) == tt.assistant:
            start = i + 1 + a
            if start < n and ids[start] == tt.newline:
                start += 1
            # else: the header newline merged into the first content token ("\n\n..."); that
            # token is labelled (it is part of what the model must produce).
            text = assistant_texts[turn] if turn < len(assistant_texts) else ""
            if (tt.think_start is not None and start < n and ids[start] == tt.think_start
                    and not text.lstrip().startswith("<think>")):
                j = start
                while j < n and ids[j] != tt.think_end and ids[j] != tt.im_end:
                    j += 1
                if j < n and ids[j] == tt.think_end:
                    start = j + 1
                    # whitespace tokens after </think> belong to the injected block
                    while (start < n and ids[start] != tt.im_end and tokenizer is not None
                           and tokenizer.decode([ids[start]]).strip() == ""):
                        start += 1
            end = start
            while end < n and ids[end] != tt.im_end:
                end += 1
            if end == n:
                raise SampleError("truncated", "assistant turn without <|im_end|>")
            spans.append((start, end + 1))
            turn += 1
            i = end + 1
        else:
            i += 1
    return spans


def labels_from_spans(ids: Sequence[int], spans: Sequence[tuple[int, int]]) -> list[int]:
    labels = [IGNORE_INDEX] * len(ids)
    for s, e in spans:
        labels[s:e] = ids[s:e]
    return labels


# -- encoding -----------------------------------------------------------------------------------
class SampleEncoder:
    """Renders, measures and encodes samples for one processor."""

    def __init__(self, processor, max_length: int):
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.max_length = max_length
        self.tt = TemplateTokens.from_tokenizer(self.tokenizer)
        ip = processor.image_processor
        self._merge = int(getattr(ip, "merge_size", 2))

    def render(self, sample: dict) -> tuple[str, list[str]]:
        """(templated text, assistant texts) for a full training conversation."""
        msgs = sample.get("messages") or []
        assistants = [message_text(m) for m in msgs if m.get("role") == "assistant"]
        if not assistants:
            raise SampleError("no_assistant", "no assistant turn: nothing to learn")
        text = self.processor.apply_chat_template(msgs, tokenize=False, add_generation_prompt=False)
        return text, assistants

    def image_tokens(self, ref: Any) -> int:
        h, w = image_size(ref)
        return self.processor.image_processor.get_number_of_image_patches(h, w) // (self._merge ** 2)

    def measure(self, sample: dict) -> int:
        """Token length after image expansion, from image headers only; raises SampleError."""
        text, assistants = self.render(sample)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        images = sample_images(sample)
        self._check_spans(ids, assistants)
        n = len(ids) + sum(self.image_tokens(ref) - 1 for ref in images)
        if n > self.max_length:
            raise SampleError("too_long", f"{n} tokens > model_max_length {self.max_length}")
        return n

    def _check_spans(self, ids, assistants) -> list[tuple[int, int]]:
        spans = assistant_spans(ids, self.tt, assistants, self.tokenizer)
        if len(spans) != len(assistants):
            raise SampleError("template", f"found {len(spans)} assistant turns in the template "
                                          f"output, expected {len(assistants)}")
        return spans

    def encode(self, sample: dict) -> dict[str, Any]:
        """input_ids / labels (1-D) plus pixel_values / image_grid_thw for one sample."""
        text, assistants = self.render(sample)
        images = []
        for ref in sample_images(sample):
            try:
                images.append(load_image(ref))
            except SampleError as e:
                e.image = str(ref)  # named once per file by BadImageLog
                raise
        out = self.processor(text=[text], images=images or None, return_tensors="pt")
        ids = out["input_ids"][0].tolist()
        spans = self._check_spans(ids, assistants)
        enc = {k: v for k, v in out.items()}
        enc["input_ids"] = out["input_ids"][0]
        enc["attention_mask"] = out["attention_mask"][0]
        if "mm_token_type_ids" in out:
            enc["mm_token_type_ids"] = out["mm_token_type_ids"][0]
        import torch
        enc["labels"] = torch.tensor(labels_from_spans(ids, spans), dtype=torch.long)
        return enc

    def encode_masked(self, sample: dict) -> dict[str, Any]:
        """The sample without its images and with every label masked: a row that teaches nothing."""
        msgs = [{**m, "content": [p for p in _parts(m) if not (p.get("type") == "image" or "image" in p)]}
                for m in sample.get("messages") or []]
        enc = self.encode({**sample, "messages": msgs})
        enc["labels"] = enc["labels"].new_full(enc["labels"].shape, IGNORE_INDEX)
        return enc


# Batch key carrying (image, message) for each row whose image did not decode; taken out of the
# batch by ``BadImageLog.take`` before the forward (the collator may run in data-loader workers).
BAD_IMAGES_KEY = "vlft_bad_images"


class BadImageLog:
    """Images that failed to decode during training: each named once, every occurrence counted."""

    def __init__(self):
        self.files: dict[str, str] = {}   # image -> first error line
        self.rows = 0                     # rows masked because of them

    def take(self, inputs: dict) -> None:
        """Remove the collator's report from ``inputs`` (before the forward) and record it."""
        import logging
        for image, message in inputs.pop(BAD_IMAGES_KEY, ()) or ():
            self.rows += 1
            if image not in self.files:
                self.files[image] = message
                logging.getLogger(__name__).warning("skipped: %s (row masked, training goes on)", message)

    def summary(self) -> dict[str, Any]:
        return {"rows": self.rows, "files": dict(self.files)}


# Batch key with the number of filler rows the collator appended (``SftCollator(pad_rows_to=...)``);
# taken out of the batch by the trainer before the forward, so throughput counts real samples only.
FILLER_ROWS_KEY = "vlft_filler_rows"

# Keys that are per-token (padded along the sequence) vs. per-image (concatenated).
_SEQ_KEYS = ("input_ids", "attention_mask", "labels", "mm_token_type_ids", "token_type_ids")
_PAD_VALUES = {"input_ids": None, "attention_mask": 0, "labels": IGNORE_INDEX,
               "mm_token_type_ids": 0, "token_type_ids": 0}
_CAT_KEYS = ("pixel_values", "image_grid_thw")


class SftCollator:
    """List of samples -> right-padded batch (lazy: images are decoded here, per batch).

    ``pad_to_multiple_of``: pad the sequence length up to a multiple of this (compiled layers and
    CUDA graphs then see a few shapes instead of one per length); padding is masked and unlabelled.

    ``pad_rows_to``: a batch with fewer samples (an epoch's short last batch) gets filler rows up to
    this many, so compiled layers see no new batch shape mid-run (each costs a compile and a CUDA-graph
    capture). A filler row teaches nothing and changes no other row: no image, every label
    ``IGNORE_INDEX`` (the labelled-token count, and so the loss's divisor ``num_items_in_batch``, is
    unchanged), attention on its first token only (rows never attend to each other; one visible token
    keeps M-RoPE positions and attention defined: a row with no visible token has no positions in
    ``get_rope_index``). MoE-LoRA's router statistics count that one token per filler row.
    """

    def __init__(self, processor, max_length: int, pad_to_multiple_of: int = 0, pad_rows_to: int = 0):
        self.encoder = SampleEncoder(processor, max_length)
        tok = processor.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        self.multiple = max(int(pad_to_multiple_of), 1)
        self.pad_rows_to = max(int(pad_rows_to), 0)

    def without_row_padding(self) -> "SftCollator":
        """The same collator without filler rows (evaluation: its loss is averaged per batch row)."""
        import copy
        other = copy.copy(self)
        other.pad_rows_to = 0
        return other

    def _filler(self, width: int, keys: set[str]) -> dict[str, Any]:
        import torch
        row = {"input_ids": torch.full((width,), self.pad_id, dtype=torch.long),
               "attention_mask": torch.zeros(width, dtype=torch.long),
               "labels": torch.full((width,), IGNORE_INDEX, dtype=torch.long)}
        row["attention_mask"][0] = 1
        for key in keys - set(row):
            row[key] = torch.zeros(width, dtype=torch.long)
        return row

    def __call__(self, samples: list[dict]) -> dict[str, Any]:
        import torch
        encs, bad = [], []
        for s in samples:
            try:
                encs.append(self.encoder.encode(s))
            except SampleError as e:
                if e.reason != "bad_image":
                    raise
                # An image that does not decode (a truncated JPEG passes the header-only length
                # check) must not end the run: the row stays, text only and fully label-masked, so
                # the batch keeps its size and the loss over the other rows is unchanged.
                bad.append((getattr(e, "image", ""), str(e)))
                encs.append(self.encoder.encode_masked(s))
        width = -(-max(len(e["input_ids"]) for e in encs) // self.multiple) * self.multiple
        fillers = max(self.pad_rows_to - len(encs), 0)
        if fillers:
            keys = {k for e in encs for k in e if k in _SEQ_KEYS}
            encs += [self._filler(width, keys) for _ in range(fillers)]
        batch: dict[str, Any] = {}
        for key in _SEQ_KEYS:
            if not any(key in e for e in encs):
                continue
            pad = self.pad_id if key == "input_ids" else _PAD_VALUES[key]
            rows = [torch.nn.functional.pad(e[key] if key in e else torch.zeros_like(e["input_ids"]),
                                            (0, width - len(e["input_ids"])), value=pad) for e in encs]
            batch[key] = torch.stack(rows)
        if bad:
            batch[BAD_IMAGES_KEY] = tuple(bad)
        if fillers:
            batch[FILLER_ROWS_KEY] = fillers
        for key in _CAT_KEYS:
            parts = [e[key] for e in encs if key in e]
            if parts:
                batch[key] = torch.cat(parts)
        return batch
