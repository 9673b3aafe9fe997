"""The main window: wires widgets to the Assistant through background workers.

State lives in three places only: ``self.assistant`` (the loaded chain), ``self._job`` (the one
running background job: load, ask or index) and ``self.prefs`` (saved settings). Everything a
model, retriever or indexer does runs on a worker thread; slots here only update widgets.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from PyQt5.QtCore import QEvent, Qt, QTimer, QUrl
from PyQt5.QtGui import QDesktopServices, QFontDatabase, QGuiApplication, QKeySequence
from PyQt5.QtWidgets import (QAction, QActionGroup, QCheckBox, QFileDialog, QGroupBox,
                             QHBoxLayout, QInputDialog, QLabel, QMainWindow, QPushButton, QSplitter, QStyle,
                             QShortcut, QToolButton, QVBoxLayout, QWidget)

from multi_agent.gui.dialogs import SettingsDialog
from multi_agent.gui.i18n import LANGUAGES, Translator, system_language
from multi_agent.gui.settings import AppSettings, Prefs
from multi_agent.conversations import ConversationStore
from multi_agent.gui.widgets import (AttachmentStrip, ChatMessage, ChatView, ConversationPanel, EvidencePanel,
                                     InputBox,
                                     KnowledgePanel, PlanPanel, ReviewPanel, SourceViewer, doc_types,
                                     local_paths, split_paths, step_review)
from multi_agent.gui.workers import Runner, Worker, ask_job, index_job, load_job

if TYPE_CHECKING:
    from multi_agent.agents.trace import StepTrace, TurnTrace
    from multi_agent.assistant import Assistant
    from multi_agent.rag import IndexReport, KnowledgeBase

log = logging.getLogger(__name__)

UrlOpener = Callable[[QUrl], bool]


def open_url(url: QUrl) -> bool:
    """Open with the desktop's default app; a no-op on headless platforms (tests, CI)."""
    if QGuiApplication.platformName() in ("offscreen", "minimal"):
        log.info("not opening %s on the %s platform", url.toString(), QGuiApplication.platformName())
        return False
    return QDesktopServices.openUrl(url)


def has_cjk_font() -> bool:
    """Can Qt draw Chinese text (is any Simplified Chinese font installed)?"""
    return bool(QFontDatabase().families(QFontDatabase.SimplifiedChinese))


def assistant_config(prefs: Prefs, api_key: str | None = None) -> Any:
    """``AssistantConfig`` from the saved preferences (empty strings mean the defaults) and the API
    key (from the OS keyring, or typed in this session)."""
    from multi_agent.assistant import AssistantConfig

    wanted = dict(model_dir=prefs.model_dir or None, adapter=prefs.adapter_dir or None,
                  backend=prefs.backend, openai_url=prefs.openai_url,
                  openai_model=prefs.openai_model or None, kb_dir=prefs.kb_dir or None,
                  openai_api_key=api_key or None, embedder=prefs.embedder or None,
                  reranker=prefs.reranker or None, ocr=prefs.ocr,
                  max_new_tokens=prefs.max_new_tokens, temperature=prefs.temperature,
                  k=prefs.k, use_rerank=prefs.use_rerank)
    known = {f.name for f in dataclasses.fields(AssistantConfig)}
    # None means "the config's own default" (e.g. kb_dir -> multi_agent/knowledge_base).
    return AssistantConfig(**{k: v for k, v in wanted.items() if k in known and v is not None})


class MainWindow(QMainWindow):
    """Chat in the middle, knowledge base on the left, plan/evidence/review on the right."""

    def __init__(self, settings: AppSettings, assistant: Assistant | None = None, *,
                 opener: UrlOpener = open_url, autoload: bool = True):
        super().__init__()
        self.settings = settings
        self.prefs = settings.load()
        self.tr_ = Translator(self.prefs.language or system_language())
        self.opener = opener
        self.assistant: Assistant | None = None
        self.kb: KnowledgeBase | None = None     # usable before (and without) a chat model
        self.runner = Runner(self)
        self._job: Worker | None = None          # the running load or ask job (one at a time)
        self._index_job: Worker | None = None    # the running index job, alongside the chat
        self._answer_at: int | None = None       # chat index of the streaming answer
        self._restart_stream = False             # next token starts a rewritten answer
        self._pending_docs: list[str] = []       # dropped while busy; indexed next
        self._sync_pending = False               # re-scan the knowledge-base folder when idle
        self._index_explicit = False             # the running index job was asked for by the user
        self._replace_from: int | None = None    # the next send replaces the turns from here on (edit)
        self.viewer: SourceViewer | None = None  # the passage viewer, made on first use
        self._session_key: str | None = None     # an API key typed here when no keyring keeps it
        # Watching the folder: a look at names/sizes/times every few seconds (off the GUI thread);
        # a change that stays the same for one more look is indexed, quietly.
        self.watch_timer = QTimer(self, interval=3000)
        self.watch_timer.timeout.connect(self._look_at_folder)
        self._looking = False
        self._fp_last = self._fp_indexed = None
        self._key_changed = False
        # Conversations live next to the settings file (tests use a temp one, so a temp store).
        self.store = ConversationStore(Path(settings.path).with_name("conversations.sqlite"))
        from multi_agent.assistant import DEFAULT_KB_DIR
        from multi_agent.rag.collections import Collections
        self.collections = Collections(Path(settings.path).with_name("knowledge_bases.json"), DEFAULT_KB_DIR)
        self.setAcceptDrops(True)
        self._build()
        self._restore_window()
        self.retranslate()
        self.chat.add("info", self.tr_("chat.welcome"))
        self._warn_missing_font()
        if assistant is not None:
            self._set_assistant(assistant)
        elif autoload:
            self.reload_assistant()
        self._update_controls()
        self.watch_timer.start()

    # -- layout ----------------------------------------------------------------------------
    def _build(self) -> None:
        tr = self.tr_
        self.chat = ChatView(tr)
        self.attachments = AttachmentStrip(tr)
        self.input = InputBox()
        # Icon buttons keep the input row narrow enough for a 1024-px-wide window.
        self.attach_button = QToolButton()
        self.attach_button.setIcon(self.style().standardIcon(QStyle.SP_DirOpenIcon))
        self.attach_button.setAutoRaise(True)
        self.send_button = QPushButton()
        self.send_button.setDefault(True)
        self.cancel_button = QPushButton()
        self.clear_button = QToolButton()
        self.clear_button.setIcon(self.style().standardIcon(QStyle.SP_FileIcon))
        self.clear_button.setAutoRaise(True)
        self.regen_button = QToolButton()
        self.regen_button.setIcon(self.style().standardIcon(QStyle.SP_BrowserReload))
        self.regen_button.setAutoRaise(True)
        self.edit_button = QToolButton()
        self.edit_button.setText("✎")
        self.edit_button.setAutoRaise(True)
        self.use_kb = QCheckBox()
        self.use_kb.setChecked(self.prefs.use_kb)

        controls = QHBoxLayout()
        controls.addWidget(self.clear_button)
        controls.addWidget(self.attach_button)
        controls.addWidget(self.use_kb)
        controls.addStretch(1)
        controls.addWidget(self.edit_button)
        controls.addWidget(self.regen_button)
        controls.addWidget(self.cancel_button)
        controls.addWidget(self.send_button)
        center = QWidget()
        col = QVBoxLayout(center)
        col.setContentsMargins(4, 4, 4, 4)
        col.addWidget(self.chat, 1)
        col.addWidget(self.attachments)
        col.addWidget(self.input)
        col.addLayout(controls)

        self.kb_panel = KnowledgePanel(tr)
        self.kb_box = self._boxed(self.kb_panel)
        self.conv_panel = ConversationPanel(tr)
        self.conv_box = self._boxed(self.conv_panel)
        self.left = QSplitter(Qt.Vertical)
        self.left.addWidget(self.conv_box)
        self.left.addWidget(self.kb_box)
        self.left.setSizes([220, 560])
        self.plan_panel = PlanPanel(tr)
        self.evidence_panel = EvidencePanel(tr)
        self.review_panel = ReviewPanel(tr)
        self.plan_box = self._boxed(self.plan_panel)
        self.evidence_box = self._boxed(self.evidence_panel)
        self.review_box = self._boxed(self.review_panel)
        self.right = QSplitter(Qt.Vertical)
        for box in (self.plan_box, self.evidence_box, self.review_box):
            self.right.addWidget(box)
        self.right.setSizes([300, 330, 150])

        self.split = QSplitter(Qt.Horizontal)
        self.split.addWidget(self.left)
        self.split.addWidget(center)
        self.split.addWidget(self.right)
        self.split.setStretchFactor(1, 1)
        self.split.setSizes([270, 640, 370])
        self.setCentralWidget(self.split)

        self.model_label = QLabel()
        self.model_label.setStyleSheet("color:#5f6368; padding: 0 6px;")
        self.statusBar().addPermanentWidget(self.model_label)

        self._build_menus()
        self.input.submitted.connect(self.send)
        self.input.images_added.connect(self.attachments.add)
        self.input.files_dropped.connect(self.add_documents)
        self.send_button.clicked.connect(self.send)
        self.cancel_button.clicked.connect(self.cancel)
        self.clear_button.clicked.connect(self.new_chat)
        self.regen_button.clicked.connect(self.regenerate)
        self.edit_button.clicked.connect(self.edit_last)
        self.conv_panel.open_requested.connect(self.open_conversation)
        self.conv_panel.new_requested.connect(self.new_chat)
        self.conv_panel.rename_requested.connect(self.rename_conversation)
        self.conv_panel.delete_requested.connect(self.delete_conversation)
        self.attach_button.clicked.connect(self.choose_images)
        self.use_kb.toggled.connect(self._on_use_kb)
        self.kb_panel.files_dropped.connect(self.add_documents)
        self.kb_panel.add_requested.connect(self.choose_documents)
        self.kb_panel.reindex_requested.connect(self.reindex)
        self.kb_panel.stop_requested.connect(self.stop_indexing)
        self.kb_panel.collection_chosen.connect(self.switch_collection)
        self.kb_panel.add_collection_requested.connect(self.add_collection)
        from multi_agent.gui.expand_dialog import install_expand_button  # "Make training data" (issue 20)
        install_expand_button(self)
        self.evidence_panel.open_requested.connect(self.open_hit)
        self.chat.citation_clicked.connect(self.show_citation)
        QShortcut(QKeySequence(Qt.Key_Escape), self, self.cancel)
        self.chat.link_clicked.connect(self.opener)

    def _boxed(self, widget: QWidget) -> QGroupBox:
        box = QGroupBox()
        lay = QVBoxLayout(box)
        lay.setContentsMargins(6, 6, 6, 6)
        lay.addWidget(widget)
        return box

    def _build_menus(self) -> None:
        bar = self.menuBar()
        self.file_menu = bar.addMenu("")
        self.act_new_chat = self.file_menu.addAction("", self.new_chat, QKeySequence("Ctrl+N"))
        self.act_attach = self.file_menu.addAction("", self.choose_images, QKeySequence("Ctrl+O"))
        self.file_menu.addSeparator()
        self.act_export = self.file_menu.addAction("", self.export_session, QKeySequence("Ctrl+S"))
        self.act_save_as = self.file_menu.addAction("", self.save_session_as, QKeySequence("Ctrl+Shift+S"))
        self.file_menu.addSeparator()
        self.act_quit = self.file_menu.addAction("", self.close, QKeySequence.Quit)
        self.model_menu = bar.addMenu("")
        self.act_settings = self.model_menu.addAction("", self.open_settings)
        self.act_embedded = self.model_menu.addAction("", self.use_embedded_model)
        self.act_reload = self.model_menu.addAction("", self.reload_assistant)
        self.language_menu = bar.addMenu("")
        group = QActionGroup(self)
        self.language_actions: dict[str, QAction] = {}
        for code, name in LANGUAGES.items():
            act = self.language_menu.addAction(name)
            act.setCheckable(True)
            act.setData(code)
            act.triggered.connect(lambda _=False, c=code: self.set_language(c))
            group.addAction(act)
            self.language_actions[code] = act

    def retranslate(self) -> None:
        t = self.tr_
        self.setWindowTitle(t("app.title"))
        self.input.setPlaceholderText(t("input.placeholder"))
        self.attach_button.setToolTip(t("input.attach"))
        self.send_button.setText(t("input.send"))
        self.cancel_button.setText(t("input.cancel"))
        self.clear_button.setToolTip(t("input.clear"))
        self.act_new_chat.setText(t("input.clear"))
        self.act_attach.setText(t("input.attach"))
        self.use_kb.setText(t("input.use_kb"))
        self.kb_box.setTitle(t("panel.kb"))
        self.conv_box.setTitle(t("panel.chats"))
        self.regen_button.setToolTip(t("input.regenerate"))
        self.edit_button.setToolTip(t("input.edit"))
        self.plan_box.setTitle(t("panel.plan"))
        self.evidence_box.setTitle(t("panel.evidence"))
        self.review_box.setTitle(t("panel.review"))
        self.file_menu.setTitle(t("menu.file"))
        self.model_menu.setTitle(t("menu.model"))
        self.language_menu.setTitle(t("menu.language"))
        self.act_export.setText(t("act.export"))
        self.act_save_as.setText(t("act.save_as"))
        self.act_quit.setText(t("act.quit"))
        self.act_settings.setText(t("act.settings"))
        self.act_embedded.setText(t("act.embedded"))
        self.act_reload.setText(t("act.reload"))
        self.language_actions[self.tr_.language].setChecked(True)
        for part in (self.attachments, self.plan_panel, self.evidence_panel, self.review_panel,
                     self.kb_panel, self.conv_panel, *([self.viewer] if self.viewer else [])):
            part.retranslate()
        self.chat.render()
        self._update_model_label()

    def set_language(self, code: str) -> None:
        self.tr_.set_language(code)
        self.prefs.language = self.tr_.language
        self.settings.save(self.prefs)
        self.retranslate()
        self._warn_missing_font()

    def _warn_missing_font(self) -> None:
        """The Chinese interface with no CJK font is all boxes: say so (in both languages' words)."""
        if self.tr_.language == "zh" and not has_cjk_font():
            text = self.tr_("chat.no_cjk_font") + "\n" + Translator("en")("chat.no_cjk_font")
            self.chat.add("info", text)
            self.statusBar().showMessage(Translator("en")("chat.no_cjk_font"), 15000)

    # -- state -----------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """Any background job running (a model load, a question, or indexing)."""
        return self._job is not None or self._index_job is not None

    @property
    def indexing(self) -> bool:
        return self._index_job is not None

    def _update_controls(self) -> None:
        kind = self._job.kind if self._job else None
        ready = self.assistant is not None and kind is None
        self.send_button.setEnabled(ready)
        self.cancel_button.setEnabled(kind == "ask" and not self._job.cancel.is_set())
        self.clear_button.setEnabled(ready)
        self.act_new_chat.setEnabled(ready)
        has_turns = ready and bool(self.assistant.history)
        self.regen_button.setEnabled(has_turns)
        self.edit_button.setEnabled(has_turns)
        self.conv_panel.setEnabled(ready)
        for act in (self.act_export, self.act_save_as):
            act.setEnabled(ready)
        for act in (self.act_settings, self.act_embedded, self.act_reload):
            act.setEnabled(kind is None)
        self.kb_panel.set_busy(self.indexing)
        self.kb_panel.add_button.setEnabled(self.kb is not None)
        self.kb_panel.reindex_button.setEnabled(self.kb is not None and not self.indexing)

    def _start(self, worker: Worker) -> Worker:
        if worker.kind == "index":
            self._index_job = worker
        else:
            self._job = worker
        worker.failed.connect(self._on_failed)
        worker.finished.connect(self._on_finished)
        self.runner.start(worker)
        self._update_controls()
        return worker

    def _on_finished(self) -> None:
        worker = self.sender()
        if worker is self._index_job:
            self._index_job = None
            if self._sync_pending:
                self._sync_pending = False
                self._start_index(None, explicit=False)
            elif self._pending_docs:
                docs, self._pending_docs = self._pending_docs, []
                self.add_documents(docs)
        elif worker is self._job:
            self._job = None
            self._answer_at = None
            if self.assistant is not None:
                self.statusBar().showMessage(self.assistant.notice or self.tr_("status.ready"), 3000)
        self._update_controls()

    def _on_failed(self, message: str) -> None:
        worker = self.sender()
        kind = worker.kind if isinstance(worker, Worker) else ""
        if kind == "ask" and self._answer_at is not None:
            msg = self.chat.messages[self._answer_at]
            if not msg.text:
                self.chat.messages.pop(self._answer_at)
            self._answer_at = None
        if kind == "load":
            self.statusBar().showMessage(self.tr_("status.load_failed", err=message))
            self._update_model_label()
        self.chat.add("error", message)

    # -- model -----------------------------------------------------------------------------
    def reload_assistant(self) -> None:
        """Build a new Assistant from the saved settings on a worker thread."""
        if self._job is not None:
            return
        try:
            config = assistant_config(self.prefs, self._api_key())
        except Exception as e:  # noqa: BLE001 (a bad setting or a missing package: say so)
            self.chat.add("error", f"{type(e).__name__}: {e}")
            return
        self.statusBar().showMessage(self.tr_("status.loading"))
        self.model_label.setText(self.tr_("status.loading"))
        self._open_kb(config)
        worker = load_job(config, kb=self.kb, store=self.store)
        worker.done.connect(self._on_loaded)
        self._start(worker)

    def _open_kb(self, config: Any) -> None:
        """Open the knowledge base named in ``config`` (if not open yet) and bring its index up to
        date in the background: it needs no chat model, so it runs while the model loads."""
        from multi_agent.assistant import knowledge_base

        kb = knowledge_base(config)          # cheap: nothing loads until it is used
        same = lambda c: (Path(c.kb_dir), c.embedder, c.reranker, c.ocr)  # noqa: E731
        if self.kb is not None and same(self.kb.config) == same(kb.config):
            return
        self._use_kb(kb)

    def _use_kb(self, kb: KnowledgeBase) -> None:
        self.kb = kb
        self.kb_panel.set_folder(str(kb.kb_dir))
        self._refresh_collections()
        self.kb_panel.set_files([])  # filled in by the index sync below
        if self.indexing:
            self._sync_pending = True
        else:
            self._start_index(None, explicit=False)

    def _on_loaded(self, assistant: Assistant) -> None:
        self._set_assistant(assistant)

    def _set_assistant(self, assistant: Assistant) -> None:
        self.assistant = assistant
        if assistant.store is None:
            assistant.store = self.store
        self._refresh_conversations()
        if assistant.kb is not self.kb:
            self._use_kb(assistant.kb)
        self._update_model_label()
        self.statusBar().showMessage(assistant.notice or self.tr_("status.ready"))
        self._update_controls()

    def _update_model_label(self) -> None:
        a = self.assistant
        if a is None:
            self.model_label.setText(self.tr_("status.no_assistant"))
            return
        cfg = a.config
        name = cfg.model_dir or cfg.openai_model or ""
        text = a.notice or f"{cfg.backend}: {name}".strip(": ")
        if cfg.adapter:
            text += f" + {Path(str(cfg.adapter)).name}"
        self.model_label.setText(text)
        self.model_label.setToolTip(text)

    def open_settings(self) -> None:
        dialog = SettingsDialog(self.prefs, self.tr_, self, api_key=self._api_key())
        if dialog.exec_():
            self.set_api_key(dialog.api_key())
            self.apply_prefs(dialog.prefs())

    def _api_key(self) -> str | None:
        from multi_agent.providers import load_api_key

        return self._session_key if self._session_key is not None else load_api_key(self.prefs.openai_url)

    def set_api_key(self, key: str) -> None:
        """Keep the key in the OS keyring when there is one, else for this session only; never in
        the settings file."""
        from multi_agent.providers import save_api_key

        if key == (self._api_key() or ""):
            return
        self._session_key = None if save_api_key(self.prefs.openai_url, key) else key
        self._key_changed = True

    def apply_prefs(self, prefs: Prefs) -> None:
        """Save new settings; reload the Assistant if anything it is built from changed."""
        old = self.prefs
        self.prefs = prefs
        self.settings.save(prefs)
        if prefs.language != self.tr_.language and prefs.language:
            self.set_language(prefs.language)
        model_fields = ("backend", "model_dir", "adapter_dir", "openai_url", "openai_model", "kb_dir",
                        "max_new_tokens", "temperature", "k", "use_rerank", "embedder", "reranker", "ocr")
        if any(getattr(old, f) != getattr(prefs, f) for f in model_fields) or self.assistant is None \
                or self._key_changed:
            self._key_changed = False
            self.reload_assistant()

    def use_embedded_model(self) -> None:
        self.apply_prefs(dataclasses.replace(self.prefs, backend="local", model_dir="", adapter_dir=""))

    # -- asking ----------------------------------------------------------------------------
    def send(self) -> None:
        """Send the input (and attachments) as one request; ignored while another runs."""
        if self._job is not None:
            self.statusBar().showMessage(self.tr_("input.busy"), 3000)
            return
        if self.assistant is None:
            self.statusBar().showMessage(self.tr_("status.no_assistant"), 5000)
            return
        question = self.input.toPlainText().strip()
        images = self.attachments.paths()
        if not question:
            if images:
                self.statusBar().showMessage(self.tr_("input.empty"), 5000)
            return
        self.input.clear()
        self.attachments.clear()
        replace_from, self._replace_from = self._replace_from, None
        self._ask(question, images, replace_from)

    def regenerate(self) -> None:
        """Ask the last question again; its new answer replaces the old one."""
        if self._job is not None or self.assistant is None or not self.assistant.history:
            return
        last = self.assistant.history[-1]
        self._ask(last.question, [p for p in last.images if Path(p).is_file()], len(self.assistant.history) - 1)

    def edit_last(self) -> None:
        """Put the last question back in the input box; Send then replaces it and its answer."""
        if self._job is not None or self.assistant is None or not self.assistant.history:
            return
        self._replace_from = len(self.assistant.history) - 1
        self.input.setPlainText(self.assistant.history[-1].question)
        self.input.setFocus()
        self.statusBar().showMessage(self.tr_("status.editing"), 10000)

    def _ask(self, question: str, images: list[str], replace_from: int | None) -> None:
        if replace_from is not None:        # the chat shows the conversation as it will be
            self._show_turns(self.assistant.history[:replace_from])
        self.chat.add("user", question, images)
        self._answer_at = self.chat.add("assistant", "")
        self._restart_stream = False
        self.plan_panel.reset()
        self.evidence_panel.set_hits([])
        self.review_panel.set_review(None)
        self.statusBar().showMessage(self.tr_("status.running"))
        worker = ask_job(self.assistant, question, images, self.use_kb.isChecked(), replace_from)
        worker.token.connect(self._on_token)
        worker.step.connect(self._on_step)
        worker.done.connect(self._on_answer)
        self._start(worker)

    def cancel(self) -> None:
        if self._job is not None and self._job.kind == "ask":
            self._job.cancel.set()
            self.statusBar().showMessage(self.tr_("status.cancelling"))
            self._update_controls()

    def _on_token(self, text: str) -> None:
        if self._answer_at is None:
            return
        if self._restart_stream:  # the Reviewer asked for a rewrite: the new answer replaces the draft
            self._restart_stream = False
            self.chat.set_text(self._answer_at, "")
        self.chat.append_text(self._answer_at, text)

    def _on_step(self, step: StepTrace) -> None:
        """Fill the side panels as each agent finishes, not only when the turn ends. The evidence
        panel is filled here, once per turn, when the Knowledge step hands over its passages."""
        self.plan_panel.add_step(step)
        if self._answer_at is not None:  # progress under the answer: "planner ✓ · manager ✓"
            self.chat.messages[self._answer_at].note = " · ".join(f"{s.name} ✓" for s in self.plan_panel.steps)
            self.chat.schedule_render()
        if step.name == "knowledge":
            self.evidence_panel.set_hits(step.data.get("hits") or [])
        elif step.name == "reviewer":
            self.review_panel.set_review(step_review(step))
            self._restart_stream = step.data.get("verdict") == "RETRY"

    def _on_answer(self, trace: TurnTrace) -> None:
        if self._answer_at is None:
            return
        note = f"{trace.seconds:.1f} s"
        if trace.cancelled:
            note = f"{self.tr_('chat.cancelled')} · {note}"
        streamed = self.chat.messages[self._answer_at].text
        answer = trace.answer or streamed
        if answer.strip():
            self.chat.set_text(self._answer_at, answer, note=note)
        elif not trace.error and not trace.cancelled:
            self.chat.set_text(self._answer_at, f"*{self.tr_('chat.empty')}*", note=note)
        else:
            self.chat.messages.pop(self._answer_at)
            self.chat.render()
            if trace.cancelled:
                self.chat.add("info", self.tr_("chat.cancelled"))
        self._answer_at = None
        self.plan_panel.show_trace(trace)
        ran = {s.name for s in trace.steps}
        self.review_panel.set_review(trace.review if "reviewer" in ran else None)
        if trace.error:
            self.chat.add("error", trace.error)
        self._refresh_conversations()
        for call in trace.tool_calls:
            if call.get("error"):
                self.chat.add("error", f"{call.get('name')}: {call['error']}")

    def new_chat(self) -> None:
        if self._job is not None or self.assistant is None:
            return
        self.assistant.reset()
        self._replace_from = None
        self._show_turns([])
        self._refresh_conversations()

    # -- conversations ---------------------------------------------------------------------
    def _refresh_conversations(self) -> None:
        current = self.assistant.conversation_id if self.assistant is not None else None
        self.conv_panel.set_conversations(self.store.list(), current)
        self._update_controls()

    def _show_turns(self, turns: list[TurnTrace]) -> None:
        """The chat and the side panels as they were after ``turns``."""
        self.chat.clear_messages()
        self.chat.add("info", self.tr_("chat.welcome"))
        for t in turns:
            self.chat.messages.append(ChatMessage("user", t.question, [p for p in t.images if Path(p).is_file()]))
            self.chat.messages.append(ChatMessage("assistant", t.answer or f"*{self.tr_('chat.empty')}*",
                                                  note=f"{t.seconds:.1f} s"))
        self.chat.render()
        self.plan_panel.reset()
        self.review_panel.set_review(None)
        last = turns[-1] if turns else None
        if last is not None:
            self.plan_panel.show_trace(last)
            if any(s.name == "reviewer" for s in last.steps):
                self.review_panel.set_review(last.review)
        self.evidence_panel.set_hits(last.evidence if last is not None else [])

    def open_conversation(self, conversation_id: int) -> None:
        """Reopen a saved conversation: its turns come back, its knowledge base is chosen again, and
        the next question continues it."""
        if self._job is not None or self.assistant is None:
            return
        info = self.store.get(conversation_id)
        if info is not None and info.kb and self.kb is not None and Path(info.kb) != Path(self.kb.kb_dir):
            self._switch_to_folder(Path(info.kb))
        self._replace_from = None
        self._show_turns(self.assistant.open_conversation(conversation_id))
        self._refresh_conversations()

    # -- several knowledge bases ----------------------------------------------------------------
    def _refresh_collections(self) -> None:
        if self.kb is None:
            return
        current = self.collections.by_folder(Path(self.kb.kb_dir))
        if current is None:                      # a folder given on the command line: name it
            name, n = Path(self.kb.kb_dir).name or "kb", 1
            while self.collections.get(name) is not None:
                n += 1
                name = f"{Path(self.kb.kb_dir).name}-{n}"
            current = self.collections.add(name, Path(self.kb.kb_dir))
        self.kb_panel.set_collections([c.name for c in self.collections.list()], current.name)

    def switch_collection(self, name: str) -> None:
        """Answer from (and index) the named knowledge base; remembered, and recorded on the
        conversation in progress."""
        c = self.collections.get(name)
        if c is not None:
            self._switch_to_folder(c.kb_dir)

    def _switch_to_folder(self, kb_dir: Path) -> None:
        from multi_agent.assistant import knowledge_base

        if self.kb is not None and Path(self.kb.kb_dir) == kb_dir:
            return
        self.prefs.kb_dir = str(kb_dir)
        self.settings.save(self.prefs)
        self._use_kb(knowledge_base(assistant_config(self.prefs)))
        if self.assistant is not None:
            self.assistant.use_kb(self.kb)
            if self.assistant.conversation_id is not None:
                self.store.set_kb(self.assistant.conversation_id, kb_dir)

    def add_collection(self, kb_dir: str | None = None, name: str | None = None) -> None:
        """Add a folder as a named knowledge base and switch to it."""
        if kb_dir is None:
            kb_dir = QFileDialog.getExistingDirectory(self, self.tr_("dlg.kb_folder"), self.prefs.last_dir)
            if not kb_dir:
                return
        try:
            c = self.collections.add(name or Path(kb_dir).name, Path(kb_dir))
        except ValueError as e:
            self.chat.add("error", str(e))
            return
        self.switch_collection(c.name)

    def rename_conversation(self, conversation_id: int, title: str | None = None) -> None:
        if title is None:
            info = self.store.get(conversation_id)
            title, ok = QInputDialog.getText(self, self.tr_("conv.rename_title"), self.tr_("conv.rename_title"),
                                             text=info.title if info else "")
            if not ok:
                return
        if title.strip():
            self.store.rename(conversation_id, title)
            self._refresh_conversations()

    def delete_conversation(self, conversation_id: int) -> None:
        self.store.delete(conversation_id)
        if self.assistant is not None and self.assistant.conversation_id == conversation_id:
            self.new_chat()
        self._refresh_conversations()

    def _on_use_kb(self, on: bool) -> None:
        self.prefs.use_kb = on
        self.settings.save(self.prefs)

    # -- attachments ---------------------------------------------------------------------------
    def choose_images(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, self.tr_("dlg.attach_title"), self.prefs.last_dir,
                                                self.tr_("dlg.images"))
        if paths:
            self.prefs.last_dir = str(Path(paths[0]).parent)
            self.attachments.add(paths)

    def dragEnterEvent(self, event):  # noqa: N802 (Qt API)
        if local_paths(event.mimeData()):
            event.acceptProposedAction()

    def dropEvent(self, event):  # noqa: N802
        """Anywhere on the window: images are attached, documents go to the knowledge base."""
        images, docs, other = split_paths(local_paths(event.mimeData()))
        event.acceptProposedAction()
        if images:
            self.attachments.add(images)
        if docs or other:
            self.add_documents(docs + other)

    # -- knowledge base ------------------------------------------------------------------------
    def choose_documents(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, self.tr_("dlg.add_title"), self.prefs.last_dir,
                                                self.tr_("dlg.docs", patterns=" ".join(
                                                    f"*{t}" for t in doc_types().split())))
        if paths:
            self.prefs.last_dir = str(Path(paths[0]).parent)
            self.add_documents(paths)

    def add_documents(self, paths: list[str]) -> None:
        """Copy documents into the knowledge base and index them (queued while indexing runs; the
        chat stays usable meanwhile). Files the indexer does not read are named in a quiet note."""
        images, docs, other = split_paths(paths)
        rejected = images + other
        if rejected:
            from multi_agent.rag.index import display_name

            self.chat.add("info", self.tr_("chat.skipped_files", types=doc_types(),
                                           names=", ".join(display_name(Path(p).name) for p in rejected)))
        if not docs:
            return
        if self.indexing or self.kb is None:
            self._pending_docs += [d for d in docs if d not in self._pending_docs]
            self.kb_panel.status.setText(self.tr_("kb.queued"))
            return
        self._start_index(docs)

    def reindex(self) -> None:
        if not self.indexing and self.kb is not None:
            self._start_index(None)

    def _look_at_folder(self) -> None:
        if self.kb is None or self.indexing or self._looking:
            return
        kb = self.kb

        def fn(w: Worker):
            from multi_agent.rag.watch import fingerprint
            return kb, fingerprint(kb.kb_dir, kb.config.index_dir)

        worker = Worker("look", fn)
        worker.done.connect(self._on_looked)
        worker.finished.connect(self._on_look_finished)
        self._looking = True
        self.runner.start(worker)

    def _on_look_finished(self) -> None:
        self._looking = False

    def _on_looked(self, result: tuple) -> None:
        kb, fp = result
        if kb is not self.kb:
            return
        if self._fp_indexed is None or self._fp_indexed[0] is not kb:
            self._fp_indexed = (kb, fp)          # the start-up sync covers what is there now
        elif fp == self._fp_last and fp != self._fp_indexed[1] and not self.indexing:
            self._fp_indexed = (kb, fp)          # changed, and settled since the last look
            self._start_index(None, explicit=False)
        self._fp_last = fp

    def stop_indexing(self) -> None:
        """Stop after the current embedding batch; the files finished so far are kept."""
        if self._index_job is not None:
            self._index_job.cancel.set()
            self.kb_panel.stop_button.setEnabled(False)

    def _start_index(self, docs: list[str] | None, explicit: bool = True) -> None:
        worker = index_job(self.kb, docs)
        worker.progress.connect(self.kb_panel.set_progress)
        worker.done.connect(self._on_indexed)
        self.statusBar().showMessage(self.tr_("status.indexing"), 3000)
        self._index_explicit = explicit
        self._start(worker)

    def _on_indexed(self, result: tuple[IndexReport, list[dict], KnowledgeBase]) -> None:
        from multi_agent.rag.index import display_name

        report, files, kb = result
        if kb is not self.kb:        # another knowledge base was chosen meanwhile
            return
        self.kb_panel.set_files(files, ignored=len(report.ignored))
        changed = report.added or report.changed or report.deleted
        # A start-up sync that found nothing new stays quiet; non-documents are only counted.
        if self._index_explicit or changed or report.cancelled:
            self.chat.add("info", self.tr_("chat.indexed", skipped=len(report.skipped), ignored=len(report.ignored),
                                           added=report.added, changed=report.changed, deleted=report.deleted,
                                           chunks=report.chunks))
            if report.skipped:
                self.chat.add("info", "\n".join([self.tr_("chat.not_indexed", n=len(report.skipped))] + [
                    f"{display_name(p)}: {why}" for p, why in report.skipped]))
        if report.cancelled:
            self.chat.add("info", self.tr_("chat.index_stopped"))

    def open_hit(self, hit: Any) -> None:
        """Show the passage in its source (the page, the chunk highlighted); *Open file* in the viewer
        opens the file itself, a PDF at that page."""
        from multi_agent.agents.trace import cite_label
        from multi_agent.rag.index import display_name

        if self.kb is None:
            return
        try:
            text = self.kb.source_text(hit.source, hit.page)
        except Exception as e:  # noqa: BLE001 (moved, deleted or now unreadable: say so)
            self.chat.add("error", f"{display_name(str(hit.source))}: cannot show ({e})")
            return
        if self.viewer is None:
            self.viewer = SourceViewer(self.tr_, self)
            self.viewer.open_external.connect(self.opener)
        path = (Path(self.kb.kb_dir) / hit.source).resolve()
        self.viewer.show_passage(path, display_name(cite_label(hit)), text, hit.start, hit.end, hit.page)

    def show_citation(self, n: int) -> None:
        """A citation [n] clicked in the chat: select its evidence row and show the passage."""
        self.evidence_panel.select(n)
        if 1 <= n <= len(self.evidence_panel.hits):
            self.open_hit(self.evidence_panel.hits[n - 1])

    # -- export ----------------------------------------------------------------------------
    def export_session(self) -> Path | None:
        """Write the session report (Assistant.save_summary) and say where."""
        if self.assistant is None or self._job is not None:
            return None
        try:
            path = Path(self.assistant.save_summary())
        except Exception as e:  # noqa: BLE001
            self.chat.add("error", f"{type(e).__name__}: {e}")
            return None
        self.chat.add("info", self.tr_("chat.exported", path=path))
        self.statusBar().showMessage(str(path), 5000)
        return path

    def save_session_as(self) -> Path | None:
        if self.assistant is None or self._job is not None:
            return None
        start = str(Path(self.prefs.last_dir or Path.home()) / "session.md")
        target, _ = QFileDialog.getSaveFileName(self, self.tr_("dlg.save_title"), start,
                                                self.tr_("dlg.markdown"))
        if not target:
            return None
        report = self.export_session()
        if report is None:
            return None
        target = Path(target)
        if target.suffix.lower() != ".md":
            target = target.with_suffix(".md")
        try:
            if target.resolve() != report.resolve():
                tmp = target.with_name(f".{target.name}.tmp")
                shutil.copyfile(report, tmp)
                tmp.replace(target)
        except OSError as e:
            self.chat.add("error", f"{target}: cannot write ({e.strerror or e})")
            return None
        self.prefs.last_dir = str(target.parent)
        self.chat.add("info", self.tr_("chat.exported", path=target))
        return target

    # -- window ----------------------------------------------------------------------------
    def _restore_window(self) -> None:
        geometry = self.settings.window_value("geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:
            self.resize(1280, 800)
        for name, splitter in (("split", self.split), ("right", self.right)):
            state = self.settings.window_value(name)
            if state is not None:
                splitter.restoreState(state)

    def closeEvent(self, event):  # noqa: N802 (Qt API)
        self.watch_timer.stop()
        self.runner.cancel_all()
        self.runner.wait_all(60_000)
        self.settings.save(self.prefs)
        self.settings.save_window(self.saveGeometry(), {"split": self.split.saveState(),
                                                        "right": self.right.saveState()})
        super().closeEvent(event)

    def changeEvent(self, event):  # noqa: N802
        if event.type() == QEvent.LanguageChange:
            self.retranslate()
        super().changeEvent(event)
