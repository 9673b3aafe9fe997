"""The README pictures of the desktop assistant, made the same way every time.

    python scripts/screenshots.py               # image/app.png    (English)
    python scripts/screenshots.py --lang zh     # image/app_zh.png (Chinese; needs a CJK font)
    make screenshots                            # both

Opens the real main window offscreen over the bundled sample knowledge base
(``multi_agent/knowledge_base/``; its index goes to a temp folder, so nothing in the checkout
changes), asks one question whose answer is in that knowledge base, waits for the answer and
saves the window as a small palette PNG. Run it from the repo root: the panel shows the folder
relative to where the app started (``multi_agent/knowledge_base``).

The backend is the one the picture (and its README caption) says: ``scripted`` by default, the
demo backend with no language model, whose answer quotes the best-matching sentence of each
retrieved passage with its citation; retrieval, evidence, citations and the panels are the
app's real ones. ``--backend local --model_dir DIR`` takes the same picture with a real Qwen-VL
(unset ``--model_dir``: the embedded tiny random-weight model, whose answers are noise).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

if __package__ in (None, ""):  # run as a script: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vlft.config import BaseConfig, field, parse_config, require  # noqa: E402
from vlft.paths import REPO_DIR  # noqa: E402

# One question per language whose answer is in the sample knowledge base.
QUESTIONS = {
    "en": "Which settings does the guide recommend for fine-tuning on an 8 GB GPU?",
    "zh": "MoE-LoRA 训练时怎样防止所有词元都挤到同一个专家上？",
}
DEFAULT_OUT = {"en": REPO_DIR / "image" / "app.png", "zh": REPO_DIR / "image" / "app_zh.png"}


@dataclass
class ShotConfig(BaseConfig):
    """Screenshot of the desktop assistant answering one question from the sample knowledge base."""

    lang: Literal["en", "zh"] = field("en", "interface and question language", aliases=("language",))
    out: str | None = field(None, "PNG to write; unset: image/app.png (en) or image/app_zh.png (zh)")
    backend: Literal["scripted", "local"] = field(
        "scripted", "scripted: the demo backend (no language model; the answer quotes the retrieved "
        "passages); local: a Qwen-VL in this process (--model_dir)")
    model_dir: str | None = field(None, "local backend: model folder; unset: the embedded tiny random-weight "
                                  "model", aliases=("model",))
    adapter: str | None = field(None, "local backend: adapter folder from lora.py / MoeLORA.py")
    question: str | None = field(None, "the question; unset: one per language whose answer is in the "
                                 "sample knowledge base")
    max_new_tokens: int = field(160, "local backend: longest answer in tokens")
    width: int = field(1280, "window width in pixels")
    height: int = field(800, "window height in pixels")
    colors: int = field(128, "palette colours of the PNG (a small file in git); 0 keeps full colour")
    timeout_s: float = field(600.0, "give up when indexing plus the answer take longer than this")

    def validate(self) -> None:
        super().validate()
        require(self.width >= 800 and self.height >= 500, "width", "the window needs at least 800 x 500")
        require(self.colors == 0 or 2 <= self.colors <= 256, "colors", "must be 0 or 2..256")
        require(self.timeout_s > 0, "timeout_s", "must be > 0")
        require(self.backend == "local" or not (self.model_dir or self.adapter), "model_dir",
                "needs --backend local")


@dataclass
class Shot:
    """What the picture shows (printed by the CLI; the test checks it)."""

    path: Path
    size: tuple[int, int]
    backend: str          # the model label in the status bar
    folder: str           # the knowledge-base panel's folder line
    evidence: int         # rows in the Evidence panel
    citations: int        # citation links in the answer
    seconds: float

    def summary(self) -> str:
        return (f"{self.path}: {self.size[0]}x{self.size[1]}, {self.path.stat().st_size // 1024} KB, "
                f"backend {self.backend!r}, {self.folder!r}, {self.evidence} evidence rows, "
                f"{self.citations} citations, {self.seconds:.0f} s")


# -- the scripted backend's answers: the plan in the question's language, quotes of the passages ----------
def _is_zh(messages: list[Any]) -> bool:
    from multi_agent.llm.base import message_text

    return "你是" in message_text(messages[0])   # the Chinese system prompts start so


def plan_steps(messages: list[Any]) -> str:
    """The Planner of the scripted demo: the app's own default plan, in the prompt's language."""
    import json

    from multi_agent.agents.prompts import FALLBACK_STEPS

    return json.dumps({"steps": FALLBACK_STEPS["zh" if _is_zh(messages) else "en"], "needs_kb": True},
                      ensure_ascii=False)


_EVIDENCE = re.compile(r"^\[(\d+)\] \([^\n]*\)\n(.+)$", re.M)
_QUESTION = re.compile(r"^(?:Question|问题): (.+)$", re.M)
_SENTENCE = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])")   # "lora.py" stays one word
_WORD = re.compile(r"[a-z0-9][a-z0-9-]*")
_CJK = re.compile(r"[\u4e00-\u9fff]+")
_STOP = {"a", "an", "the", "and", "or", "of", "on", "in", "to", "for", "with", "is", "are", "do", "does", "which",
         "what", "how", "this", "that", "use", "guide", "recommend"}


def _terms(text: str) -> set[str]:
    """English words and Chinese character pairs: enough to find the sentence a question asks about."""
    text = text.lower()
    words = set(_WORD.findall(text)) - _STOP
    pairs = {run[i:i + 2] for run in _CJK.findall(text) for i in range(len(run) - 1)}
    return words | pairs


def quote_passages(messages: list[Any], per_answer: int = 3) -> str:
    """The Responder of the scripted demo: the sentence of each passage that shares most terms with
    the question, best passages first, each cited as [n]. No language model: what retrieval found."""
    from multi_agent.llm.base import message_text

    prompt = message_text(messages[-1])
    question = _QUESTION.findall(prompt)
    wanted = _terms(question[-1] if question else prompt)
    zh = _is_zh(messages)
    found: dict[str, tuple[int, str]] = {}          # sentence -> (score, citation): each sentence once
    for n, passage in _EVIDENCE.findall(prompt):
        for sentence in _SENTENCE.split(passage):
            sentence = sentence.strip()
            score = len(wanted & _terms(sentence))
            heading = sentence.startswith("#")      # a Markdown title ran into its first sentence
            if len(sentence) > 8 and not heading and score > found.get(sentence, (0, ""))[0]:
                found[sentence] = (score, n)
    best = sorted(found.items(), key=lambda kv: -kv[1][0])[:per_answer]
    top = best[0][1][0] if best else 0
    lines = [f"- {s} [{n}]" for s, (score, n) in best if 2 * score >= top]
    if not lines:
        return "知识库中没有找到相关内容。" if zh else "The knowledge base has nothing on this."
    head = "知识库中的相关内容：" if zh else "From the knowledge base:"
    return head + "\n\n" + "\n".join(lines)


# -- the window ------------------------------------------------------------------------------------------
def take_screenshot(cfg: ShotConfig) -> Shot | None:
    """Open the window offscreen, ask, wait, save the PNG. None (with one line on stderr) when the
    Chinese picture is asked for and no Chinese font is installed: it would be all boxes."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PyQt5.QtWidgets import QApplication

    from multi_agent.gui.window import has_cjk_font

    app = QApplication.instance() or QApplication(sys.argv[:1])
    out = Path(cfg.out) if cfg.out else DEFAULT_OUT[cfg.lang]
    if cfg.lang == "zh" and not has_cjk_font():
        print(f"no Chinese font installed (e.g. apt install fonts-noto-cjk): {out} not made", file=sys.stderr)
        return None
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="vlft-shots-") as tmp:
        window = _open_window(cfg, Path(tmp))
        try:
            _ask(app, window, cfg.question or QUESTIONS[cfg.lang], start + cfg.timeout_s)
            window.chat.verticalScrollBar().setValue(window.chat.verticalScrollBar().maximum())
            window.statusBar().clearMessage()   # "Ready" again; the model label on the right stays
            app.processEvents()
            _save_png(window.grab().toImage(), out, cfg.colors)
            return Shot(out, (window.width(), window.height()), window.model_label.text(),
                        window.kb_panel.folder.text(), window.evidence_panel.tree.topLevelItemCount(),
                        window.chat.toHtml().count('href="cite:'), time.monotonic() - start)
        finally:
            window.close()


def _open_window(cfg: ShotConfig, tmp: Path):
    """The main window with temp settings and conversations, over the bundled knowledge base with its
    index in ``tmp`` (the app's own KnowledgeBase and Assistant, built as the app builds them)."""
    from multi_agent.assistant import DEFAULT_KB_DIR, Assistant, AssistantConfig
    from multi_agent.gui.settings import AppSettings, Prefs
    from multi_agent.gui.window import MainWindow
    from multi_agent.rag import KnowledgeBase, RagConfig

    settings = AppSettings(tmp / "assistant.ini")
    settings.save(Prefs(language=cfg.lang, backend=cfg.backend, model_dir=cfg.model_dir or "",
                        adapter_dir=cfg.adapter or "", kb_dir=str(DEFAULT_KB_DIR),
                        max_new_tokens=cfg.max_new_tokens))
    config = AssistantConfig(backend=cfg.backend, model_dir=cfg.model_dir, adapter=cfg.adapter,
                             kb_dir=DEFAULT_KB_DIR, reports_dir=tmp / "reports", max_new_tokens=cfg.max_new_tokens)
    kb = KnowledgeBase(RagConfig(kb_dir=DEFAULT_KB_DIR, index_dir=tmp / "index"))
    chat_model = None
    if cfg.backend == "scripted":
        from multi_agent.llm.scripted import ScriptedChatModel

        chat_model = ScriptedChatModel(rules={"Planner": plan_steps, "Responder": quote_passages}, token_delay=0.002)
    # The local model loads on the first question, on the window's worker thread.
    window = MainWindow(settings, assistant=Assistant(config, chat_model=chat_model, kb=kb))
    window.resize(cfg.width, cfg.height)
    side = max(370, cfg.width * 2 // 7)              # the file names fit on the left
    window.split.setSizes([side, cfg.width - 2 * side, side])
    window.show()
    return window


def _ask(app, window, question: str, deadline: float) -> None:
    """Wait for indexing, send ``question`` as a user would, wait for the answer."""
    def wait_idle(what: str) -> None:
        while window.busy:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} did not finish in time (raise --timeout_s)")
            app.processEvents()
            time.sleep(0.02)

    wait_idle("indexing the sample knowledge base")
    window.input.setPlainText(question)
    window.send()
    wait_idle("the answer")
    errors = [m.text for m in window.chat.messages if m.role == "error"]
    if errors:
        raise RuntimeError(f"the app showed an error: {errors[-1]}")


def _save_png(image, out: Path, colors: int) -> None:
    """A ``QImage`` as an optimized PNG (a palette of ``colors``: a few tens of KB), written to a temp
    file and renamed."""
    from io import BytesIO

    from PIL import Image
    from PyQt5.QtCore import QBuffer, QByteArray, QIODevice

    from vlft.utils.io import atomic_write

    raw = QByteArray()
    buf = QBuffer(raw)
    buf.open(QIODevice.WriteOnly)
    image.save(buf, "PNG")
    picture = Image.open(BytesIO(bytes(raw))).convert("RGB")
    if colors:
        picture = picture.quantize(colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    with atomic_write(out, "wb") as f:
        picture.save(f, format="PNG", optimize=True)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(ShotConfig, argv, description=__doc__.split("\n\n")[0])
    from vlft.utils.logging import setup_logging

    setup_logging(False)
    try:
        shot = take_screenshot(cfg)
    except (TimeoutError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if shot is not None:
        print(shot.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
