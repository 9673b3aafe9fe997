"""Generators: prompts (text, optional image) -> model outputs, behind one small interface.

``none`` means no model (document captions only). ``local`` runs a Qwen-VL in this process through
``vlft.infer.VLGenerator``, ``batch_size`` prompts per forward pass; an ``http(s)://`` URL is any
OpenAI-compatible endpoint, ``concurrency`` requests in flight. Outputs are cached on disk keyed by
(content hash, prompt, generator), so a rerun after a crash generates only what is missing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

log = logging.getLogger(__name__)
Progress = Callable[[int], None]   # called with the number of prompts just finished


@dataclass(frozen=True)
class Prompt:
    text: str
    image: str | None = None        # local image path
    key: str = ""                   # content hash of what the prompt is about (chunk / image)


class Generator(Protocol):
    name: str                       # stable id: part of the cache key

    def generate(self, prompts: Sequence[Prompt], progress: Progress | None = None) -> list[str | None]:
        """One output per prompt, in order; None where that prompt failed (counted, not fatal)."""


# -- prompts (the document's language) ---------------------------------------------------------------
PROMPTS = {
    "qa": {
        "en": ("Read the passage below and write {n} question-answer pairs that the passage answers. Use only "
               "facts stated in the passage and answer in English. Write each pair as two lines:\n"
               "Q: <question>\nA: <answer>\n\nPassage:\n{text}"),
        "zh": ("阅读下面的段落，写出{n}个可以由该段落回答的问答对。答案只能使用段落中写明的事实，用中文回答。"
               "每个问答对写成两行：\n问：<问题>\n答：<答案>\n\n段落：\n{text}"),
    },
    "vqa": {
        "en": ("Look at the figure. Its caption in the document is: \"{caption}\". Write {n} question-answer pairs "
               "about the figure that the caption answers, in English. Write each pair as two lines:\n"
               "Q: <question>\nA: <answer>"),
        "zh": ("请看这张图。文档中的图注是：“{caption}”。写出{n}个关于这张图、可由图注回答的问答对，用中文。"
               "每个问答对写成两行：\n问：<问题>\n答：<答案>"),
    },
    "caption": {
        "en": "Write a one- or two-sentence caption for this figure from a document. Text near the figure: {text}",
        "zh": "为文档中的这张图写一两句图注。图附近的文字：{text}",
    },
    "judge": {
        "en": ("Source text:\n{text}\n\nQuestion: {question}\nAnswer: {answer}\n\nIs the answer correct and fully "
               "supported by the source text? Reply with one word: yes or no."),
        "zh": ("原文：\n{text}\n\n问题：{question}\n答案：{answer}\n\n这个答案正确并且完全由原文支持吗？只回答一个字：是 或 否。"),
    },
}
# The user turn of image-caption training samples.
CAPTION_QUESTION = {"en": "Describe this figure.", "zh": "描述这张图片。"}

_PAIR = re.compile(r"(?:^|\n)\s*(?:\d+[.)、]\s*)?(?:Q|Question|问题?)\s*[:：]\s*(.+?)\s*\n\s*(?:A|Answer|答案?)\s*[:：]\s*"
                   r"(.+?)(?=\n\s*(?:\d+[.)、]\s*)?(?:Q|Question|问题?)\s*[:：]|\Z)", re.S)


def render(kind: str, lang: str, **kw) -> str:
    return PROMPTS[kind][lang if lang in ("en", "zh") else "en"].format(**kw)


def parse_verdict(output: str | None) -> bool | None:
    """A judge's yes/no ("yes", "Yes.", "是", "否", "no, because ..."); None when it says neither."""
    t = (output or "").strip().lower().lstrip("*\"'「“ ")
    if t.startswith(("yes", "是", "对", "支持")):
        return True
    if t.startswith(("no", "否", "不")):
        return False
    return None


def parse_pairs(output: str) -> list[tuple[str, str]]:
    """"Q: ... A: ..." / "问：... 答：..." blocks -> [(question, answer)]."""
    out = []
    for m in _PAIR.finditer(output or ""):
        q, a = " ".join(m.group(1).split()), " ".join(m.group(2).split())
        if q and a:
            out.append((q, a))
    return out


# -- implementations -----------------------------------------------------------------------------------
class ScriptedGenerator:
    """Answers from a function (tests and dry runs): ``fn(prompt) -> text``."""

    def __init__(self, fn: Callable[[Prompt], str | None], name: str = "scripted"):
        self.fn, self.name = fn, name
        self.calls = 0

    def generate(self, prompts, progress=None):
        out = []
        for p in prompts:
            self.calls += 1
            out.append(self.fn(p))
            if progress:
                progress(1)
        return out


class LocalGenerator:
    """A Qwen-VL in this process (base or tuned), batched; text-only prompts need no image."""

    def __init__(self, model_dir: str | Path, adapter: str | Path | None = None, batch_size: int = 8,
                 max_new_tokens: int = 256, loader: Callable[[], Any] | None = None):
        """``loader`` returns the ``VLGenerator`` to use (the desktop app passes its shared, already loaded
        model: one 4B model fits an 8 GB GPU, two do not); default: load ``model_dir`` on first use."""
        self.model_dir, self.adapter = str(model_dir), str(adapter) if adapter else None
        self.batch_size, self.max_new_tokens = batch_size, max_new_tokens
        adapter_name = Path(self.adapter).name if self.adapter else "-"
        self.name = f"local:{Path(self.model_dir).name}:{adapter_name}:{max_new_tokens}"
        self._loader = loader
        self._vl = None

    @property
    def vl(self):
        if self._vl is None:
            if self._loader is not None:
                self._vl = self._loader()
            else:
                from vlft.infer import VLGenerator
                self._vl = VLGenerator(self.model_dir, adapter=self.adapter)
        return self._vl

    def generate(self, prompts, progress=None):
        # Text-only and image prompts in separate batches: a batch pads to its longest prompt.
        order = sorted(range(len(prompts)), key=lambda i: (prompts[i].image is not None, len(prompts[i].text)))
        results: dict[int, str | None] = {}
        vl = self.vl    # a model that does not load is an error for the whole run, not per batch
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            convs = [[{"role": "user", "content": ([{"type": "image", "image": prompts[i].image}]
                                                   if prompts[i].image else []) +
                       [{"type": "text", "text": prompts[i].text}]}] for i in idx]
            try:
                texts = vl.generate_batch(convs, max_new_tokens=self.max_new_tokens, batch_size=len(convs))
            except Exception as e:  # one bad batch (an unreadable image) must not end the run
                log.warning("generation failed for %d prompt(s): %s: %s", len(idx), e.__class__.__name__, e)
                texts = [None] * len(idx)
            results.update(zip(idx, texts))
            if progress:
                progress(len(idx))
        return [results[i] for i in range(len(prompts))]


class OpenAIGenerator:
    """Any OpenAI-compatible endpoint (vLLM, Ollama, LM Studio), ``concurrency`` requests at once."""

    def __init__(self, url: str, model: str | None = None, concurrency: int = 4, max_new_tokens: int = 256,
                 timeout: float = 120.0):
        from multi_agent.llm.openai_compat import OpenAICompatChatModel

        self.chat = OpenAICompatChatModel(base_url=url, model=model or "", max_new_tokens=max_new_tokens,
                                          timeout=timeout)
        self.concurrency = max(1, concurrency)
        self.name = f"openai:{url}:{model or '-'}:{max_new_tokens}"

    MAX_FAILURES_IN_A_ROW = 5       # then the server is down: the remaining prompts fail without a request

    def _one(self, p: Prompt) -> str | None:
        from langchain_core.messages import HumanMessage

        if self._failures >= self.MAX_FAILURES_IN_A_ROW:
            return None
        parts = ([{"type": "image", "image": p.image}] if p.image else []) + [{"type": "text", "text": p.text}]
        try:
            text = str(self.chat.invoke([HumanMessage(content=parts)]).content)
        except Exception as e:  # network errors, HTTP 5xx, bad JSON: this prompt only
            with self._lock:
                self._failures += 1
                if self._failures == 1 or self._failures == self.MAX_FAILURES_IN_A_ROW:
                    log.warning("%s: request failed (%s: %s)%s", self.chat.base_url, e.__class__.__name__, e,
                                "; giving up on this run" if self._failures >= self.MAX_FAILURES_IN_A_ROW else "")
            return None
        with self._lock:
            self._failures = 0
        return text

    def generate(self, prompts, progress=None):
        self._failures, self._lock = 0, threading.Lock()
        try:
            self.chat.model_name()      # resolve the served model once, not in every thread
        except Exception as e:  # server down or not OpenAI-compatible: every prompt fails, the run goes on
            log.warning("%s: cannot list models (%s: %s); pass --model", self.chat.base_url, e.__class__.__name__, e)
            if progress:
                progress(len(prompts))
            return [None] * len(prompts)
        with ThreadPoolExecutor(self.concurrency) as pool:
            futures = [pool.submit(self._one, p) for p in prompts]
            out = []
            for f in futures:
                out.append(f.result())
                if progress:
                    progress(1)
        return out


def _local(spec: str, model: str | None, adapter: str | None, batch_size: int, concurrency: int,
           max_new_tokens: int) -> Generator:
    if not model:
        raise ValueError("generator: 'local' needs --model (a Qwen-VL folder)")
    from vlft.models.loading import check_model_dir
    check_model_dir(model)      # a wrong folder fails now, not after every document was read
    return LocalGenerator(model, adapter, batch_size, max_new_tokens)


def _url(spec: str, model: str | None, adapter: str | None, batch_size: int, concurrency: int,
         max_new_tokens: int) -> Generator:
    return OpenAIGenerator(spec, model, concurrency, max_new_tokens)


# --generator value (an http(s) URL counts as "url") -> factory; "none" is no model at all.
GENERATORS: dict[str, Callable[..., Generator | None]] = {"none": lambda *a: None, "local": _local, "url": _url}


def make_generator(spec: str, model: str | None = None, adapter: str | None = None, batch_size: int = 8,
                   concurrency: int = 4, max_new_tokens: int = 256) -> Generator | None:
    """``none`` -> None; ``local`` -> LocalGenerator(model); ``http(s)://...`` -> OpenAIGenerator."""
    kind = "url" if spec.startswith(("http://", "https://")) else spec
    if kind not in GENERATORS:
        raise ValueError(f"generator: {spec!r} is not none, local or an http(s):// URL")
    return GENERATORS[kind](spec, model, adapter, batch_size, concurrency, max_new_tokens)


# -- cache ---------------------------------------------------------------------------------------------
class GenerationCache:
    """Append-only JSON Lines of key -> output; a torn last line (crash) is ignored on load."""

    def __init__(self, path: Path):
        self.path = path
        self._data: dict[str, str] = {}
        self._lock = threading.Lock()
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                    self._data[row["k"]] = row["v"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue

    @staticmethod
    def key(p: Prompt, generator: str) -> str:
        return hashlib.sha256(json.dumps([p.key, p.text, p.image and Path(p.image).name, generator],
                                         ensure_ascii=False).encode()).hexdigest()

    def get(self, k: str) -> str | None:
        return self._data.get(k)

    def put(self, items: list[tuple[str, str]]) -> None:
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                for k, v in items:
                    self._data[k] = v
                    f.write(json.dumps({"k": k, "v": v}, ensure_ascii=False) + "\n")
                f.flush()

    def __len__(self) -> int:
        return len(self._data)


def generate_cached(gen: Generator, prompts: list[Prompt], cache: GenerationCache, batch: int = 32,
                    progress: Progress | None = None) -> tuple[list[str | None], int]:
    """Outputs for ``prompts``, generating only those not in ``cache`` (saved every ``batch``);
    returns them and how many came from the cache."""
    keys = [cache.key(p, gen.name) for p in prompts]
    out: list[str | None] = [cache.get(k) for k in keys]
    todo = [i for i, v in enumerate(out) if v is None]
    if progress and len(prompts) - len(todo):
        progress(len(prompts) - len(todo))
    for s in range(0, len(todo), batch):
        idx = todo[s:s + batch]
        res = gen.generate([prompts[i] for i in idx], progress)
        cache.put([(keys[i], r) for i, r in zip(idx, res) if r is not None])
        for i, r in zip(idx, res):
            out[i] = r
    return out, len(prompts) - len(todo)
