"""Interface text in English and Chinese; one table, looked up by key.

Only the interface is translated: answers, file names and the Assistant's own notices are shown
as they come.
"""

from __future__ import annotations

LANGUAGES = {"en": "English", "zh": "中文"}

# key -> (English, Chinese). Placeholders use str.format names.
TEXT: dict[str, tuple[str, str]] = {
    "app.title": ("Qwen-VL Assistant", "Qwen-VL 多智能体助手"),
    # chat
    "chat.you": ("You", "你"),
    "chat.assistant": ("Assistant", "助手"),
    "chat.error": ("Error", "错误"),
    "chat.info": ("Note", "提示"),
    "chat.cancelled": ("(stopped)", "（已停止）"),
    "chat.empty": ("(the model returned no text)", "（模型没有返回文字）"),
    "chat.thinking": ("Thinking…", "思考中…"),
    "chat.welcome": (
        "Ask a question, attach images (button, drag-and-drop or paste), and tick "
        "**Use knowledge base (RAG)** to answer from your documents.",
        "输入问题，可附加图片（按钮、拖放或粘贴），勾选 **启用知识库检索 (RAG)** 即可基于你的文档回答。",
    ),
    "chat.exported": ("Session saved to `{path}`", "会话已保存到 `{path}`"),
    "chat.indexed": (
        "Knowledge base updated: {added} added, {changed} changed, {deleted} removed, "
        "{skipped} skipped, {ignored} not documents (ignored), {chunks} chunks.",
        "知识库已更新：新增 {added}，修改 {changed}，删除 {deleted}，跳过 {skipped}，"
        "{ignored} 个非文档文件（已忽略），共 {chunks} 个片段。",
    ),
    "chat.skipped_files": ("Not added (not a document type the indexer reads: {types}): {names}",
                           "未添加（索引器不读取这种文件类型，支持：{types}）：{names}"),
    "chat.not_indexed": ("Not indexed ({n}):", "未能索引（{n} 个）："),
    "chat.index_stopped": ("Indexing stopped: the files finished so far are kept; Re-index resumes.",
                           "索引已停止：已完成的文件会保留；点击“重建索引”继续。"),
    "chat.no_cjk_font": ("No Chinese font is installed, so Chinese text shows as boxes: install one "
                         "(e.g. fonts-noto-cjk) and restart.",
                         "未安装中文字体，中文会显示为方框：请安装（例如 fonts-noto-cjk）后重启。"),
    # input row
    "input.placeholder": (
        "Type a question — Enter sends, Shift+Enter adds a line",
        "输入问题 — Enter 发送，Shift+Enter 换行",
    ),
    "input.send": ("Send", "发送"),
    "input.cancel": ("Stop", "停止"),
    "input.attach": ("Attach image…", "添加图片…"),
    "input.use_kb": ("Use knowledge base (RAG)", "启用知识库检索 (RAG)"),
    "input.clear": ("New chat", "新对话"),
    "input.remove": ("Remove", "移除"),
    "input.empty": ("Type a question first (images alone are not a question).",
                    "请先输入问题（仅有图片不能作为问题）。"),
    "input.busy": ("A request is running: wait or press Stop.", "正在处理上一个请求：请等待或点击停止。"),
    # side panels
    "panel.plan": ("Plan && decision", "计划与调度"),
    "panel.evidence": ("Evidence", "检索证据"),
    "panel.review": ("Review", "审核"),
    "panel.kb": ("Knowledge base", "知识库"),
    "plan.steps": ("Planner", "规划"),
    "plan.needs_kb": ("needs knowledge base: {v}", "需要知识库：{v}"),
    "plan.decision": ("Manager", "调度"),
    "plan.retrieve": ("retrieve: {v}", "检索：{v}"),
    "plan.query": ("query: {v}", "检索词：{v}"),
    "plan.reason": ("reason: {v}", "理由：{v}"),
    "plan.timeline": ("Steps", "步骤"),
    "plan.empty": ("No request yet.", "暂无请求。"),
    "yes": ("yes", "是"),
    "no": ("no", "否"),
    "evidence.col.n": ("#", "#"),
    "evidence.col.file": ("File", "文件"),
    "evidence.col.page": ("Page", "页"),
    "evidence.col.score": ("Score", "得分"),
    "evidence.hint": ("Double-click a row to open the file.", "双击一行打开文件。"),
    "review.verdict": ("Verdict: {v}", "结论：{v}"),
    "review.rewrites": ("Rewrites: {n}", "重写次数：{n}"),
    "review.feedback": ("Feedback", "意见"),
    "kb.drop": ("Drop documents here ({types})", "将文档拖放到此处（{types}）"),
    "kb.stop": ("Stop", "停止"),
    "panel.chats": ("Conversations", "对话"),
    "viewer.open": ("Open file", "打开文件"),
    "set.api_key": ("API key", "API 密钥"),
    "set.key_keyring": ("kept in the OS keyring", "保存在系统钥匙串中"),
    "set.key_session": ("no OS keyring: kept for this session only ($OPENAI_API_KEY also works)",
                        "没有系统钥匙串：仅在本次运行中保留（也可设置 $OPENAI_API_KEY）"),
    "set.list_models": ("List models", "列出模型"),
    "set.first_listed": ("(the first model the server lists)", "（服务器列出的第一个模型）"),
    "set.embedder": ("Embedder", "向量模型"),
    "set.embedder_hint": ("(the index's own, else all-MiniLM-L6-v2)", "（索引自己的，否则 all-MiniLM-L6-v2）"),
    "set.reranker": ("Reranker", "重排序模型"),
    "set.reranker_hint": ("(BAAI/bge-reranker-base if on disk; none = off)", "（磁盘上有 BAAI/bge-reranker-base 时使用；none = 关闭）"),
    "set.check": ("Check", "检查"),
    "set.ocr": ("Read images and scanned PDFs (OCR)", "识别图片和扫描版 PDF 中的文字 (OCR)"),
    "set.checking": ("Loading the embedder and the reranker…", "正在加载向量模型和重排序模型…"),
    "set.asking": ("Asking {url} for its models…", "正在向 {url} 查询模型…"),
    "set.models_found": ("{n} models listed by the server", "服务器列出了 {n} 个模型"),
    "kb.collection": ("Knowledge base:", "知识库："),
    "kb.add_collection": ("Add a knowledge base (a folder)…", "添加知识库（一个文件夹）…"),
    "dlg.kb_folder": ("Folder of the new knowledge base", "新知识库的文件夹"),
    "conv.new": ("New", "新建"),
    "conv.rename": ("Rename", "重命名"),
    "conv.delete": ("Delete", "删除"),
    "conv.rename_title": ("Rename conversation", "重命名对话"),
    "conv.turns": ("{n} turns", "{n} 轮"),
    "input.regenerate": ("Regenerate the last answer", "重新生成上一个回答"),
    "input.edit": ("Edit the last question and resend it", "编辑上一个问题并重新发送"),
    "status.editing": ("Editing your last question: Send replaces it and its answer.",
                       "正在编辑上一个问题：发送后将替换它和它的回答。"),
    "kb.filter": ("Filter files…", "筛选文件…"),
    "kb.ignored": ("{n} files indexed · {m} not documents (ignored)", "已索引 {n} 个文件 · {m} 个非文档文件（已忽略）"),
    "kb.add": ("Add files…", "添加文件…"),
    "kb.reindex": ("Re-index", "重建索引"),
    "kb.col.file": ("File", "文件"),
    "kb.col.chunks": ("Chunks", "片段"),
    "kb.col.pages": ("Pages", "页数"),
    "kb.folder": ("Folder: {path}", "目录：{path}"),
    "kb.indexing": ("Indexing {done}/{total} files, {chunks}/{known} chunks: {name}",
                    "正在索引 {done}/{total} 个文件，{chunks}/{known} 个片段：{name}"),
    "kb.idle": ("{n} files indexed", "已索引 {n} 个文件"),
    "kb.queued": ("Queued: indexed when the current indexing run ends.", "已排队：当前索引结束后开始。"),
    # menus / actions
    "menu.file": ("&File", "文件(&F)"),
    "menu.model": ("&Model", "模型(&M)"),
    "menu.language": ("&Language", "语言(&L)"),
    "act.export": ("Export session", "导出会话"),
    "act.save_as": ("Save session as…", "会话另存为…"),
    "act.quit": ("Quit", "退出"),
    "act.settings": ("Model && settings…", "模型与设置…"),
    "act.reload": ("Reload model", "重新加载模型"),
    "act.embedded": ("Use embedded tiny model", "使用内置微型模型"),
    "dlg.save_title": ("Save session as Markdown", "保存会话为 Markdown"),
    "dlg.attach_title": ("Attach images", "添加图片"),
    "dlg.add_title": ("Add documents to the knowledge base", "向知识库添加文档"),
    "dlg.images": ("Images (*.png *.jpg *.jpeg *.bmp *.gif *.webp)", "图片 (*.png *.jpg *.jpeg *.bmp *.gif *.webp)"),
    "dlg.docs": ("Documents ({patterns})", "文档 ({patterns})"),
    "dlg.markdown": ("Markdown (*.md)", "Markdown (*.md)"),
    # settings dialog
    "set.title": ("Model and settings", "模型与设置"),
    "set.backend": ("Backend", "后端"),
    "set.model_dir": ("Model folder", "模型目录"),
    "set.model_hint": ("empty = embedded tiny model", "留空 = 内置微型模型"),
    "set.adapter": ("LoRA adapter folder", "LoRA 适配器目录"),
    "set.adapter_hint": ("optional", "可选"),
    "set.openai_url": ("OpenAI-compatible URL", "OpenAI 兼容地址"),
    "set.openai_model": ("Served model name", "服务端模型名"),
    "set.kb_dir": ("Knowledge base folder", "知识库目录"),
    "set.max_new_tokens": ("Max new tokens", "最大生成长度"),
    "set.temperature": ("Temperature", "温度"),
    "set.k": ("Evidence passages (k)", "证据条数 (k)"),
    "set.rerank": ("Cross-encoder rerank", "交叉编码器重排序"),
    "set.browse": ("Browse…", "浏览…"),
    "set.language": ("Interface language", "界面语言"),
    # status bar
    "status.loading": ("Loading model…", "正在加载模型…"),
    "status.ready": ("Ready", "就绪"),
    "status.running": ("Answering…", "正在回答…"),
    "status.cancelling": ("Stopping…", "正在停止…"),
    "status.indexing": ("Indexing…", "正在索引…"),
    "status.load_failed": ("Model failed to load: {err}", "模型加载失败：{err}"),
    "status.no_assistant": ("No model loaded: open Model → Model & settings.",
                            "未加载模型：请打开 模型 → 模型与设置。"),
    # "Make training data" dialog (expand_dialog.py)
    "expand.title": ("Make training data", "生成训练数据"),
    "expand.button": ("Make training data…", "生成训练数据…"),
    "expand.sources": ("Documents", "文档"),
    "expand.generator": ("Generator", "生成方式"),
    "expand.gen.none": ("none (document captions only)", "无（仅用文档中的图注）"),
    "expand.gen.local": ("local model", "本地模型"),
    "expand.url": ("or an OpenAI-compatible URL", "或 OpenAI 兼容地址"),
    "expand.model": ("Model folder (URL: model name)", "模型目录（地址：模型名）"),
    "expand.output": ("Output folder", "输出目录"),
    "expand.train": ("Append to training file (optional)", "追加到训练文件（可选）"),
    "expand.run": ("Extract", "提取"),
    "expand.save": ("Save selected", "保存所选"),
    "expand.close": ("Close", "关闭"),
    "expand.col.keep": ("Keep", "保留"),
    "expand.col.kind": ("Kind", "类型"),
    "expand.col.question": ("Question", "问题"),
    "expand.col.answer": ("Answer", "答案"),
    "expand.col.source": ("Source", "来源"),
    "expand.working": ("{phase}: {done}/{total}", "{phase}：{done}/{total}"),
    "expand.found": ("{n} pairs found ({removed} removed by curation, {skipped} sources skipped). Untick the "
                     "ones to drop, then save.", "找到 {n} 条（筛选去掉 {removed} 条，跳过 {skipped} 个来源）。"
                     "取消勾选不要的，再保存。"),
    "expand.saved": ("Saved {n} samples to {path}", "已保存 {n} 条样本到 {path}"),
    "expand.no_sources": ("Select documents in the knowledge-base panel first.", "请先在知识库面板中选择文档。"),
}


class Translator:
    """``tr(key, **fmt)`` in the current language; unknown keys come back as the key itself."""

    def __init__(self, language: str = "en"):
        self.language = language if language in LANGUAGES else "en"

    def set_language(self, language: str) -> None:
        self.language = language if language in LANGUAGES else "en"

    def __call__(self, key: str, **fmt) -> str:
        pair = TEXT.get(key)
        if pair is None:
            return key
        text = pair[1] if self.language == "zh" else pair[0]
        return text.format(**fmt) if fmt else text


def system_language() -> str:
    """'zh' for a Chinese system locale, 'en' otherwise."""
    from PyQt5.QtCore import QLocale

    return "zh" if QLocale.system().name().lower().startswith("zh") else "en"
