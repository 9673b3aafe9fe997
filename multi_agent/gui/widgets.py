"""The window's parts: chat view, input box, attachment strip, agent panels, knowledge-base panel.

Widgets only display and emit signals; the window wires them to the Assistant via workers.
"""

from __future__ import annotations

import html
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import markdown
from markdown.inlinepatterns import InlineProcessor
from PyQt5.QtCore import QMimeData, Qt, QTimer, QUrl, pyqtSignal
from PyQt5.QtGui import QColor, QImage, QPixmap, QTextCharFormat, QTextCursor
from PyQt5.QtWidgets import (QAbstractItemView, QComboBox, QDialog, QFrame, QHBoxLayout, QHeaderView, QLabel, QLineEdit,
                             QListWidget, QListWidgetItem, QPlainTextEdit, QProgressBar, QPushButton, QScrollArea, QSplitter,
                             QTextBrowser, QToolButton, QTreeWidget, QTreeWidgetItem, QVBoxLayout,
                             QWidget)

from multi_agent.agents.trace import Decision, Plan, Review, StepTrace, TurnTrace
from multi_agent.gui.i18n import Translator
from multi_agent.rag.index import display_name
from multi_agent.rag.schema import Hit

from vlft.data.vocab import IMAGE_EXTENSIONS as IMAGE_EXTS  # noqa: E402 (one list for every stage)
THUMB = 64  # px, attachment thumbnails
CHAT_THUMB = 120  # px, images shown inside a user turn

ROLE_COLORS = {"user": "#1a73e8", "assistant": "#188038", "error": "#c5221f", "info": "#5f6368"}
ROLE_BG = {"user": "#eef3fd", "assistant": "#ffffff", "error": "#fce8e6", "info": "#f1f3f4"}


def doc_types() -> str:
    """The document types the indexer reads, for the drop zone and notes (one list: the loaders')."""
    from multi_agent.rag.loaders import LOADERS

    return " ".join(sorted(LOADERS))


def split_paths(paths: Iterable[str]) -> tuple[list[str], list[str], list[str]]:
    """(images, documents the indexer reads, other) by file extension."""
    from multi_agent.rag.loaders import supported

    images, docs, other = [], [], []
    for p in paths:
        ext = Path(p).suffix.lower()
        (images if ext in IMAGE_EXTS else docs if supported(Path(p)) else other).append(p)
    return images, docs, other


def local_paths(mime: QMimeData) -> list[str]:
    return [u.toLocalFile() for u in mime.urls() if u.isLocalFile()] if mime.hasUrls() else []


# -- Markdown ------------------------------------------------------------------------------
class _Citation(InlineProcessor):
    """``[3]`` -> a ``cite:3`` link, so clicking a citation selects that evidence row."""

    def handleMatch(self, m, data):  # noqa: N802 (markdown API)
        a = ElementTree.Element("a")
        a.set("href", f"cite:{m.group(1)}")
        a.text = f"[{m.group(1)}]"
        return a, m.start(0), m.end(0)


def make_markdown() -> markdown.Markdown:
    """Markdown for model output: raw HTML and images are shown as text, not rendered."""
    md = markdown.Markdown(extensions=["fenced_code", "tables", "sane_lists", "nl2br"])
    md.preprocessors.deregister("html_block")
    for name in ("html", "image_link", "image_reference", "short_image_ref"):
        if name in md.inlinePatterns:
            md.inlinePatterns.deregister(name)
    md.inlinePatterns.register(_Citation(r"\[(\d{1,3})\](?![(\[])"), "citation", 175)
    return md


# -- chat ----------------------------------------------------------------------------------
@dataclass
class ChatMessage:
    role: str                    # user | assistant | error | info
    text: str
    images: list[str] = field(default_factory=list)
    note: str = ""               # small grey line under the message (timing, "stopped")


class ChatView(QTextBrowser):
    """The conversation as Markdown; the last assistant message can grow token by token."""

    citation_clicked = pyqtSignal(int)
    link_clicked = pyqtSignal(QUrl)

    def __init__(self, tr: Translator, parent: QWidget | None = None):
        super().__init__(parent)
        self.tr_ = tr
        self.messages: list[ChatMessage] = []
        self._md = make_markdown()
        self._thumbs: dict[str, QImage] = {}   # id -> scaled image
        self._thumb_ids: dict[str, str] = {}   # path -> id
        self.setOpenLinks(False)
        self.anchorClicked.connect(self._on_anchor)
        self.document().setDefaultStyleSheet(
            "p { margin: 2px 0; } pre { background: #f6f8fa; } code { background: #f6f8fa; }"
            " table { border-collapse: collapse; } th, td { border: 1px solid #d0d7de; padding: 3px; }")
        self._render_timer = QTimer(self, singleShot=True, interval=40)  # coalesce token bursts
        self._render_timer.timeout.connect(self.render)

    # model
    def add(self, role: str, text: str, images: Iterable[str] = (), note: str = "") -> int:
        self.messages.append(ChatMessage(role, text, list(images), note))
        self.render()
        return len(self.messages) - 1

    def append_text(self, index: int, text: str) -> None:
        self.messages[index].text += text
        self.schedule_render()

    def set_text(self, index: int, text: str, note: str | None = None) -> None:
        self.messages[index].text = text
        if note is not None:
            self.messages[index].note = note
        self.render()

    def clear_messages(self) -> None:
        self.messages.clear()
        self.render()

    # view
    def schedule_render(self) -> None:
        if not self._render_timer.isActive():
            self._render_timer.start()

    def render(self) -> None:
        self._render_timer.stop()
        bar = self.verticalScrollBar()
        at_bottom = bar.value() >= bar.maximum() - 4
        keep = bar.value()
        self.setHtml("".join(self._message_html(i, m) for i, m in enumerate(self.messages)))
        bar.setValue(bar.maximum() if at_bottom else keep)

    def _message_html(self, i: int, m: ChatMessage) -> str:
        name = {"user": "chat.you", "assistant": "chat.assistant",
                "error": "chat.error", "info": "chat.info"}.get(m.role, "chat.info")
        if m.role == "assistant" and not m.text:
            body = f"<p><i>{html.escape(self.tr_('chat.thinking'))}</i></p>"
        elif m.role == "error":
            body = "<p>" + html.escape(m.text).replace("\n", "<br>") + "</p>"
        else:
            self._md.reset()
            body = self._md.convert(m.text)
        imgs = "".join(f'<img src="thumb:{html.escape(self._thumb_key(p))}"> ' for p in m.images)
        note = f'<p style="color:#80868b; font-size:small;">{html.escape(m.note)}</p>' if m.note else ""
        return (f'<table width="100%" cellpadding="8" cellspacing="0" style="margin-bottom:6px;"'
                f' bgcolor="{ROLE_BG.get(m.role, "#ffffff")}"><tr><td>'
                f'<p style="color:{ROLE_COLORS.get(m.role, "#000")};"><b>{html.escape(self.tr_(name))}</b></p>'
                f'{"<p>" + imgs + "</p>" if imgs else ""}{body}{note}</td></tr></table>')

    def _thumb_key(self, path: str) -> str:
        if path not in self._thumb_ids:
            img = QImage(path)
            if not img.isNull():
                img = img.scaled(CHAT_THUMB, CHAT_THUMB, Qt.KeepAspectRatio, Qt.SmoothTransformation)
            self._thumb_ids[path] = str(len(self._thumbs))
            self._thumbs[self._thumb_ids[path]] = img
        return self._thumb_ids[path]

    def loadResource(self, kind: int, url: QUrl):  # noqa: N802 (Qt API)
        # Only our own thumbnails load; anything else a model writes stays unloaded.
        if url.scheme() == "thumb":
            img = self._thumbs.get(url.path())
            return img if img is not None and not img.isNull() else None
        return None

    def _on_anchor(self, url: QUrl) -> None:
        if url.scheme() == "cite":
            try:
                self.citation_clicked.emit(int(url.path()))
            except ValueError:
                pass
        elif url.scheme() in ("http", "https", "file"):
            self.link_clicked.emit(url)


class InputBox(QPlainTextEdit):
    """Enter sends, Shift+Enter adds a line; pasted or dropped images become attachments."""

    submitted = pyqtSignal()
    images_added = pyqtSignal(list)   # list[str] paths
    files_dropped = pyqtSignal(list)  # non-image files, for the window to route

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setTabChangesFocus(True)
        self.setMaximumHeight(110)
        self._paste_dir: Path | None = None  # pasted images are saved here to be sent as files
        self._pasted = 0

    def keyPressEvent(self, event):  # noqa: N802 (Qt API)
        if event.key() in (Qt.Key_Return, Qt.Key_Enter) and not (event.modifiers() & Qt.ShiftModifier):
            event.accept()
            self.submitted.emit()
            return
        if event.key() in (Qt.Key_Return, Qt.Key_Enter):
            self.insertPlainText("\n")
            return
        super().keyPressEvent(event)

    # paste
    def canInsertFromMimeData(self, source: QMimeData) -> bool:  # noqa: N802
        return source.hasImage() or bool(local_paths(source)) or super().canInsertFromMimeData(source)

    def insertFromMimeData(self, source: QMimeData) -> None:  # noqa: N802
        paths = local_paths(source)
        if paths:
            self._route(paths)
        elif source.hasImage():
            saved = self.save_pasted_image(source.imageData())
            if saved:
                self.images_added.emit([saved])
        else:
            super().insertFromMimeData(source)

    def save_pasted_image(self, image: Any) -> str | None:
        img = image if isinstance(image, QImage) else QImage(image)
        if img.isNull():
            return None
        if self._paste_dir is None:
            self._paste_dir = Path(tempfile.mkdtemp(prefix="assistant-paste-"))
        self._pasted += 1
        path = self._paste_dir / f"pasted-{time.strftime('%Y%m%d-%H%M%S')}-{self._pasted}.png"
        return str(path) if img.save(str(path), "PNG") else None

    # drag and drop
    def dragEnterEvent(self, event):  # noqa: N802
        if local_paths(event.mimeData()):
            event.acceptProposedAction()
        else:
            super().dragEnterEvent(event)

    def dragMoveEvent(self, event):  # noqa: N802
        if local_paths(event.mimeData()):
            event.acceptProposedAction()
        else:
            super().dragMoveEvent(event)

    def dropEvent(self, event):  # noqa: N802
        paths = local_paths(event.mimeData())
        if paths:
            event.acceptProposedAction()
            self._route(paths)
        else:
            super().dropEvent(event)

    def _route(self, paths: list[str]) -> None:
        images, docs, other = split_paths(paths)
        if images:
            self.images_added.emit(images)
        if docs or other:
            self.files_dropped.emit(docs + other)


class AttachmentStrip(QScrollArea):
    """Thumbnails of the images going with the next question, each with a remove button."""

    changed = pyqtSignal()

    def __init__(self, tr: Translator, parent: QWidget | None = None):
        super().__init__(parent)
        self.tr_ = tr
        self._paths: list[str] = []
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.NoFrame)
        self.setFixedHeight(THUMB + 26)
        self._inner = QWidget()
        self._row = QHBoxLayout(self._inner)
        self._row.setContentsMargins(0, 0, 0, 0)
        self._row.addStretch(1)
        self.setWidget(self._inner)
        self.setVisible(False)

    def paths(self) -> list[str]:
        return list(self._paths)

    def add(self, paths: Iterable[str]) -> None:
        for p in paths:
            if p not in self._paths:
                self._paths.append(p)
        self._rebuild()

    def remove(self, path: str) -> None:
        if path in self._paths:
            self._paths.remove(path)
            self._rebuild()

    def clear(self) -> None:
        self._paths.clear()
        self._rebuild()

    def retranslate(self) -> None:
        self._rebuild()

    def _rebuild(self) -> None:
        while self._row.count() > 1:
            item = self._row.takeAt(0)
            if item.widget():
                item.widget().deleteLater()
        for p in self._paths:
            self._row.insertWidget(self._row.count() - 1, self._tile(p))
        self.setVisible(bool(self._paths))
        self.changed.emit()

    def _tile(self, path: str) -> QWidget:
        tile = QFrame()
        tile.setObjectName("attachment")
        tile.setFrameShape(QFrame.StyledPanel)
        tile.setToolTip(path)
        lay = QHBoxLayout(tile)
        lay.setContentsMargins(2, 2, 2, 2)
        thumb = QLabel()
        pix = QPixmap(path)
        if pix.isNull():
            thumb.setText(Path(path).name[:12])
        else:
            thumb.setPixmap(pix.scaled(THUMB, THUMB, Qt.KeepAspectRatio, Qt.SmoothTransformation))
        thumb.setFixedSize(THUMB, THUMB)
        thumb.setAlignment(Qt.AlignCenter)
        remove = QToolButton()
        remove.setObjectName("remove")
        remove.setText("✕")
        remove.setToolTip(self.tr_("input.remove"))
        remove.setAutoRaise(True)
        remove.clicked.connect(lambda _=False, p=path: self.remove(p))
        lay.addWidget(thumb)
        lay.addWidget(remove, 0, Qt.AlignTop)
        return tile


# -- agent panels --------------------------------------------------------------------------
def step_plan(step: StepTrace) -> Plan:
    """The Planner's StepTrace.data as the typed Plan the panel shows."""
    return Plan(steps=list(step.data.get("steps") or []), needs_kb=bool(step.data.get("needs_kb")))


def step_decision(step: StepTrace) -> Decision:
    d = step.data
    return Decision(retrieve=bool(d.get("retrieve")), query=d.get("query") or "", reason=d.get("reason") or "")


def step_review(step: StepTrace) -> Review:
    d = step.data
    return Review(verdict=d.get("verdict") or "PASS", feedback=d.get("feedback") or "", rewrites=d.get("rewrites", 0))


class PlanPanel(QTextBrowser):
    """Planner steps, the Manager's decision and the live step timeline of the current turn."""

    def __init__(self, tr: Translator, parent: QWidget | None = None):
        super().__init__(parent)
        self.tr_ = tr
        self.plan: Plan | None = None
        self.decision: Decision | None = None
        self.steps: list[StepTrace] = []
        self.setOpenLinks(False)
        self.render()

    def reset(self) -> None:
        self.plan, self.decision, self.steps = None, None, []
        self.render()

    def add_step(self, step: StepTrace) -> None:
        """One finished agent: its StepTrace.data holds the plan / the decision."""
        self.steps.append(step)
        if step.name == "planner":
            self.plan = step_plan(step)
        elif step.name == "manager":
            self.decision = step_decision(step)
        self.render()

    def show_trace(self, trace: TurnTrace) -> None:
        self.steps = list(trace.steps or self.steps)
        ran = {s.name for s in self.steps}
        # A turn that failed before an agent ran has default (empty) parts: don't show those.
        self.plan = trace.plan if "planner" in ran else None
        self.decision = trace.decision if "manager" in ran else None
        self.render()

    def render(self) -> None:
        t, esc = self.tr_, html.escape
        yes_no = lambda v: t("yes") if v else t("no")  # noqa: E731
        parts = []
        if self.plan is not None:
            parts.append(f"<h4>{esc(t('plan.steps'))}</h4><ol>")
            parts += [f"<li>{esc(str(s))}</li>" for s in self.plan.steps]
            parts.append(f"</ol><p>{esc(t('plan.needs_kb', v=yes_no(self.plan.needs_kb)))}</p>")
        if self.decision is not None:
            d = self.decision
            parts.append(f"<h4>{esc(t('plan.decision'))}</h4>")
            parts.append(f"<p>{esc(t('plan.retrieve', v=yes_no(d.retrieve)))}</p>")
            if d.query:
                parts.append(f"<p>{esc(t('plan.query', v=d.query))}</p>")
            if d.reason:
                parts.append(f"<p>{esc(t('plan.reason', v=d.reason))}</p>")
        if self.steps:
            parts.append(f"<h4>{esc(t('plan.timeline'))}</h4><table cellpadding='2'>")
            for s in self.steps:
                secs = f"{s.seconds:.2f} s"
                parts.append(f"<tr><td>✓ {esc(s.name)}</td>"
                             f"<td style='color:#80868b'>{secs}</td></tr>")
            parts.append("</table>")
        self.setHtml("".join(parts) or f"<p style='color:#80868b'>{esc(t('plan.empty'))}</p>")

    def retranslate(self) -> None:
        self.render()


class EvidencePanel(QWidget):
    """Retrieved passages: file, page, score; selecting shows the text, double-click opens the file."""

    open_requested = pyqtSignal(object)  # the Hit

    def __init__(self, tr: Translator, parent: QWidget | None = None):
        super().__init__(parent)
        self.tr_ = tr
        self.hits: list[Hit] = []
        self.tree = QTreeWidget()
        self.tree.setRootIsDecorated(False)
        self.tree.setSelectionMode(QAbstractItemView.SingleSelection)
        self.tree.setAlternatingRowColors(True)
        self.tree.header().setStretchLastSection(False)
        self.preview = QTextBrowser()
        self.hint = QLabel()
        self.hint.setStyleSheet("color:#80868b;")
        self.hint.setWordWrap(True)
        split = QSplitter(Qt.Vertical)
        split.addWidget(self.tree)
        split.addWidget(self.preview)
        split.setSizes([160, 100])
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(split)
        lay.addWidget(self.hint)
        self.tree.currentItemChanged.connect(self._show_current)
        self.tree.itemDoubleClicked.connect(self._open_item)
        self.tree.itemActivated.connect(self._open_item)
        self.retranslate()

    def set_hits(self, hits: Iterable[Hit]) -> None:
        self.hits = list(hits or [])
        self.tree.clear()
        for n, h in enumerate(self.hits, 1):
            page, score = h.page, h.score
            item = QTreeWidgetItem([str(n), display_name(h.source),
                                    "" if page in (None, 0) else str(page),
                                    f"{score:.4f}" if isinstance(score, (int, float)) else ""])
            item.setData(0, Qt.UserRole, n - 1)
            item.setToolTip(1, h.text[:400])
            for col in (0, 2, 3):
                item.setTextAlignment(col, Qt.AlignRight | Qt.AlignVCenter)
            self.tree.addTopLevelItem(item)
        self.preview.clear()
        if self.hits:
            self.tree.setCurrentItem(self.tree.topLevelItem(0))

    def select(self, n: int) -> None:
        """Select citation ``n`` (1-based)."""
        if 1 <= n <= self.tree.topLevelItemCount():
            self.tree.setCurrentItem(self.tree.topLevelItem(n - 1))

    def open_row(self, row: int) -> None:
        if 0 <= row < len(self.hits):
            self.open_requested.emit(self.hits[row])

    def _open_item(self, item: QTreeWidgetItem, _col: int = 0) -> None:
        self.open_row(int(item.data(0, Qt.UserRole)))

    def _show_current(self, item: QTreeWidgetItem | None, _prev=None) -> None:
        if item is None:
            self.preview.clear()
            return
        h = self.hits[int(item.data(0, Qt.UserRole))]
        self.preview.setPlainText(h.text)

    def retranslate(self) -> None:
        t = self.tr_
        self.tree.setHeaderLabels([t("evidence.col.n"), t("evidence.col.file"),
                                   t("evidence.col.page"), t("evidence.col.score")])
        header = self.tree.header()
        header.setSectionResizeMode(0, QHeaderView.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.Stretch)
        header.setSectionResizeMode(2, QHeaderView.ResizeToContents)
        header.setSectionResizeMode(3, QHeaderView.ResizeToContents)
        self.hint.setText(t("evidence.hint"))


class ReviewPanel(QTextBrowser):
    """The Reviewer's verdict, feedback and how many rewrites it asked for."""

    def __init__(self, tr: Translator, parent: QWidget | None = None):
        super().__init__(parent)
        self.tr_ = tr
        self.review: Review | None = None
        self.render()

    def set_review(self, review: Review | None) -> None:
        self.review = review
        self.render()

    def render(self) -> None:
        t, esc = self.tr_, html.escape
        r = self.review
        if r is None:
            self.setHtml(f"<p style='color:#80868b'>{esc(t('plan.empty'))}</p>")
            return
        verdict = r.verdict or "?"
        color = "#188038" if verdict.upper().startswith("PASS") else "#e37400"
        parts = [f"<p><b style='color:{color}'>{esc(t('review.verdict', v=verdict))}</b></p>",
                 f"<p>{esc(t('review.rewrites', n=r.rewrites))}</p>"]
        if r.feedback:
            parts.append(f"<p><b>{esc(t('review.feedback'))}</b></p><p>{esc(r.feedback)}</p>")
        self.setHtml("".join(parts))

    def retranslate(self) -> None:
        self.render()


class KnowledgePanel(QWidget):
    """Indexed files as a folder tree with a filter, a drop zone for new documents, indexing progress
    (files and chunks) with a Stop button."""

    files_dropped = pyqtSignal(list)     # list[str] of dropped/chosen paths
    add_requested = pyqtSignal()
    reindex_requested = pyqtSignal()
    stop_requested = pyqtSignal()
    collection_chosen = pyqtSignal(str)          # a named knowledge base picked in the combo
    add_collection_requested = pyqtSignal()

    def __init__(self, tr: Translator, parent: QWidget | None = None):
        super().__init__(parent)
        self.tr_ = tr
        self.kb_dir = ""
        self.setAcceptDrops(True)
        self.collection_label = QLabel()
        self.collection = QComboBox()
        self.collection.activated.connect(lambda i: self.collection_chosen.emit(self.collection.itemText(i)))
        self.add_collection_button = QToolButton()
        self.add_collection_button.setText("+")
        self.add_collection_button.clicked.connect(self.add_collection_requested)
        picker = QHBoxLayout()
        picker.addWidget(self.collection_label)
        picker.addWidget(self.collection, 1)
        picker.addWidget(self.add_collection_button)
        self.folder = QLabel()
        self.folder.setWordWrap(True)
        self.folder.setStyleSheet("color:#5f6368;")
        self.drop_zone = QLabel()
        self.drop_zone.setAlignment(Qt.AlignCenter)
        self.drop_zone.setMinimumHeight(56)
        self.drop_zone.setWordWrap(True)
        self.drop_zone.setStyleSheet("QLabel { border: 2px dashed #9aa0a6; border-radius: 6px;"
                                     " color: #5f6368; padding: 6px; }")
        self.filter = QLineEdit()
        self.filter.setClearButtonEnabled(True)
        self.filter.textChanged.connect(self._apply_filter)
        self.files = QTreeWidget()
        self.files.setRootIsDecorated(True)
        self.files.setAlternatingRowColors(True)
        self.files.setTextElideMode(Qt.ElideMiddle)
        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        self.progress.setVisible(False)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.add_button = QPushButton()
        self.reindex_button = QPushButton()
        self.stop_button = QPushButton()
        self.stop_button.setVisible(False)
        self.add_button.clicked.connect(self.add_requested)
        self.reindex_button.clicked.connect(self.reindex_requested)
        self.stop_button.clicked.connect(self.stop_requested)
        buttons = QHBoxLayout()
        buttons.addWidget(self.add_button)
        buttons.addWidget(self.reindex_button)
        buttons.addWidget(self.stop_button)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(picker)
        lay.addWidget(self.folder)
        lay.addWidget(self.drop_zone)
        lay.addWidget(self.filter)
        lay.addWidget(self.files, 1)
        lay.addWidget(self.progress)
        lay.addWidget(self.status)
        lay.addLayout(buttons)
        self._n_files = 0
        self._n_ignored = 0
        self.retranslate()

    def set_collections(self, names: list[str], current: str | None) -> None:
        self.collection.blockSignals(True)
        self.collection.clear()
        self.collection.addItems(names)
        if current in names:
            self.collection.setCurrentIndex(names.index(current))
        self.collection.blockSignals(False)

    def set_folder(self, kb_dir: str) -> None:
        self.kb_dir = str(kb_dir)
        shown = self.kb_dir.replace(str(Path.home()), "~", 1)
        cwd = Path.cwd()
        if cwd != Path(cwd.anchor) and Path(kb_dir).is_relative_to(cwd) and Path(kb_dir) != cwd:
            shown = str(Path(kb_dir).relative_to(cwd))  # as typed from where the app started (the repo root)
        if len(shown) > 42:
            shown = "…" + shown[-41:]
        self.folder.setText(self.tr_("kb.folder", path=shown))
        self.folder.setToolTip(self.kb_dir)

    def set_files(self, files: Iterable[dict], ignored: int | None = None) -> None:
        """Indexed files as a tree: one node per sub-folder, the file's own name on its row (the
        full path is in the tooltip), so deep paths are never cut to "en/git/2…"."""
        from multi_agent.rag.index import display_name

        files = list(files or [])
        self._n_files = len(files)
        if ignored is not None:
            self._n_ignored = ignored
        self.files.clear()
        folders: dict[str, QTreeWidgetItem] = {}

        def folder_item(path: str) -> QTreeWidgetItem | None:
            if not path:
                return None
            if path not in folders:
                parent_path, _, name = path.rpartition("/")
                parent = folder_item(parent_path)
                item = QTreeWidgetItem([display_name(name) + "/", "", ""])
                item.setToolTip(0, display_name(path) + "/")
                (parent.addChild if parent else self.files.addTopLevelItem)(item)
                item.setExpanded(True)
                folders[path] = item
            return folders[path]

        for f in sorted(files, key=lambda f: str(f.get("path", ""))):
            rel = str(f.get("path", ""))
            pages = f.get("pages") if rel.lower().endswith(".pdf") else None
            folder, _, name = rel.rpartition("/")
            item = QTreeWidgetItem([display_name(name), str(f.get("chunks", "")), "" if not pages else str(pages)])
            item.setData(0, Qt.UserRole, rel)
            item.setToolTip(0, f"{display_name(rel)}\nsha256 {str(f.get('sha256', ''))[:12]}…")
            item.setTextAlignment(1, Qt.AlignRight | Qt.AlignVCenter)
            item.setTextAlignment(2, Qt.AlignRight | Qt.AlignVCenter)
            parent = folder_item(folder)
            (parent.addChild if parent else self.files.addTopLevelItem)(item)
        self._apply_filter(self.filter.text())
        self.status.setText(self._idle_text())

    def _idle_text(self) -> str:
        if self._n_ignored:
            return self.tr_("kb.ignored", n=self._n_files, m=self._n_ignored)
        return self.tr_("kb.idle", n=self._n_files)

    def file_items(self) -> list[QTreeWidgetItem]:
        """The file rows (not the folder nodes), in tree order."""
        out, stack = [], [self.files.topLevelItem(i) for i in reversed(range(self.files.topLevelItemCount()))]
        while stack:
            item = stack.pop()
            if item.data(0, Qt.UserRole) is not None:
                out.append(item)
            stack += [item.child(i) for i in reversed(range(item.childCount()))]
        return out

    def file_names(self) -> list[str]:
        """Paths (relative to the knowledge-base folder) of the listed files."""
        return [str(item.data(0, Qt.UserRole)) for item in self.file_items()]

    def file_item(self, rel: str) -> QTreeWidgetItem | None:
        return next((i for i in self.file_items() if i.data(0, Qt.UserRole) == rel), None)

    def _apply_filter(self, text: str) -> None:
        needle = text.strip().lower()

        def visit(item: QTreeWidgetItem) -> bool:
            rel = item.data(0, Qt.UserRole)
            if rel is not None:
                show = not needle or needle in str(rel).lower()
            else:
                show = any([visit(item.child(i)) for i in range(item.childCount())])
            item.setHidden(not show)
            return show

        for i in range(self.files.topLevelItemCount()):
            visit(self.files.topLevelItem(i))

    def set_progress(self, p: Any) -> None:
        """One ``IndexProgress``: the bar moves per file and within a file per embedding batch."""
        self.progress.setVisible(True)
        self.progress.setRange(0, 1000)
        self.progress.setValue(int(p.fraction * 1000))
        self.progress.setFormat(f"{p.files_done}/{p.files_total}")
        self.status.setText(self.tr_("kb.indexing", done=p.files_done, total=p.files_total, chunks=p.chunks_done,
                                     known=p.chunks_known, name=Path(p.path).name if p.path else ""))

    def set_busy(self, busy: bool, message: str = "") -> None:
        """Indexing runs: Re-index waits, Add files stays (its files are queued), Stop shows."""
        self.reindex_button.setEnabled(not busy)
        self.stop_button.setVisible(busy)
        self.stop_button.setEnabled(busy)
        if busy:
            self.progress.setVisible(True)
            self.progress.setRange(0, 0)  # indeterminate until the first progress report
            self.status.setText(message or self.tr_("status.indexing"))
        else:
            self.progress.setVisible(False)
            self.status.setText(message or self._idle_text())

    # drag and drop
    def dragEnterEvent(self, event):  # noqa: N802 (Qt API)
        if local_paths(event.mimeData()):
            event.acceptProposedAction()

    def dragMoveEvent(self, event):  # noqa: N802
        if local_paths(event.mimeData()):
            event.acceptProposedAction()

    def dropEvent(self, event):  # noqa: N802
        paths = local_paths(event.mimeData())
        if paths:
            event.acceptProposedAction()
            self.files_dropped.emit(paths)

    def retranslate(self) -> None:
        t = self.tr_
        self.drop_zone.setText(t("kb.drop", types=doc_types()))
        self.filter.setPlaceholderText(t("kb.filter"))
        self.files.setHeaderLabels([t("kb.col.file"), t("kb.col.chunks"), t("kb.col.pages")])
        header = self.files.header()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(0, QHeaderView.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeToContents)
        self.add_button.setText(t("kb.add"))
        self.reindex_button.setText(t("kb.reindex"))
        self.stop_button.setText(t("kb.stop"))
        self.collection_label.setText(t("kb.collection"))
        self.add_collection_button.setToolTip(t("kb.add_collection"))
        if self.kb_dir:
            self.set_folder(self.kb_dir)
        if not self.progress.isVisible():
            self.status.setText(self._idle_text())


class ConversationPanel(QWidget):
    """Saved conversations, newest first: click to reopen; New, Rename, Delete."""

    open_requested = pyqtSignal(int)
    new_requested = pyqtSignal()
    rename_requested = pyqtSignal(int)
    delete_requested = pyqtSignal(int)

    def __init__(self, tr: Translator, parent: QWidget | None = None):
        super().__init__(parent)
        self.tr_ = tr
        self.list = QListWidget()
        self.list.itemActivated.connect(self._open)
        self.list.itemClicked.connect(self._open)
        self.new_button, self.rename_button, self.delete_button = QPushButton(), QPushButton(), QPushButton()
        self.new_button.clicked.connect(self.new_requested)
        self.rename_button.clicked.connect(lambda: self._with_current(self.rename_requested))
        self.delete_button.clicked.connect(lambda: self._with_current(self.delete_requested))
        buttons = QHBoxLayout()
        for b in (self.new_button, self.rename_button, self.delete_button):
            buttons.addWidget(b)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.list, 1)
        lay.addLayout(buttons)
        self._items: list[Any] = []
        self.retranslate()

    def set_conversations(self, items: Iterable[Any], current: int | None = None) -> None:
        """``items``: ConversationInfo (id, title, turns, updated), newest first."""
        self._items = list(items)
        self.list.blockSignals(True)
        self.list.clear()
        for c in self._items:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(c.updated))
            item = QListWidgetItem(c.title or "…")
            item.setData(Qt.UserRole, c.id)
            item.setToolTip(f"{c.title}\n{when} · {self.tr_('conv.turns', n=c.turns)}")
            self.list.addItem(item)
            if c.id == current:
                self.list.setCurrentItem(item)
        self.list.blockSignals(False)

    def titles(self) -> list[str]:
        return [self.list.item(i).text() for i in range(self.list.count())]

    def ids(self) -> list[int]:
        return [int(self.list.item(i).data(Qt.UserRole)) for i in range(self.list.count())]

    def current_id(self) -> int | None:
        item = self.list.currentItem()
        return None if item is None else int(item.data(Qt.UserRole))

    def _open(self, item: QListWidgetItem) -> None:
        self.open_requested.emit(int(item.data(Qt.UserRole)))

    def _with_current(self, signal) -> None:
        cid = self.current_id()
        if cid is not None:
            signal.emit(cid)

    def retranslate(self) -> None:
        self.new_button.setText(self.tr_("conv.new"))
        self.rename_button.setText(self.tr_("conv.rename"))
        self.delete_button.setText(self.tr_("conv.delete"))


class SourceViewer(QDialog):
    """A cited passage in its source: the whole text file, or its PDF / slide / sheet page, with the
    chunk highlighted and scrolled into view; *Open file* hands the file (at its page) to the
    desktop's app."""

    open_external = pyqtSignal(QUrl)

    def __init__(self, tr: Translator, parent: QWidget | None = None):
        super().__init__(parent)
        self.tr_ = tr
        self.setModal(False)
        self.resize(720, 560)
        self.title = QLabel()
        self.title.setWordWrap(True)
        self.text = QTextBrowser()
        self.open_button = QPushButton()
        self.open_button.clicked.connect(lambda: self.open_external.emit(self.url))
        row = QHBoxLayout()
        row.addWidget(self.title, 1)
        row.addWidget(self.open_button)
        lay = QVBoxLayout(self)
        lay.addLayout(row)
        lay.addWidget(self.text, 1)
        self.url = QUrl()
        self.retranslate()

    def show_passage(self, path: Path, label: str, text: str, start: int, end: int, page: int | None) -> None:
        self.url = QUrl.fromLocalFile(str(path))
        if page and path.suffix.lower() == ".pdf":
            self.url.setFragment(f"page={page}")   # PDF viewers and browsers open at that page
        self.title.setText(label)
        self.setWindowTitle(label)
        self.text.setPlainText(text)
        cursor = QTextCursor(self.text.document())
        cursor.setPosition(max(0, min(start, len(text))))
        cursor.setPosition(max(0, min(end, len(text))), QTextCursor.KeepAnchor)
        fmt = QTextCharFormat()
        fmt.setBackground(QColor("#fff3b0"))
        cursor.mergeCharFormat(fmt)
        cursor.setPosition(max(0, min(start, len(text))))
        self.text.setTextCursor(cursor)
        self.text.ensureCursorVisible()
        self.show()
        self.raise_()

    def highlighted(self) -> str:
        """The text shown highlighted (tests)."""
        block, out = self.text.document().begin(), []
        while block.isValid():
            it = block.begin()
            while not it.atEnd():
                frag = it.fragment()
                if frag.charFormat().background().color() == QColor("#fff3b0"):
                    out.append(frag.text())
                it += 1
            block = block.next()
        return "".join(out)

    def retranslate(self) -> None:
        self.open_button.setText(self.tr_("viewer.open"))
