"""Real test files for the knowledge base: texts in many encodings and real PDFs
(reportlab; Chinese through its built-in STSong-Light CID font, so no CJK TTF is needed)."""

from __future__ import annotations

from pathlib import Path

EN_GUIDE = """# Training notes

Gradient checkpointing trades compute for memory: activations are recomputed during the backward pass, \
which lets a 4B model train on an 8 GB GPU.

The learning rate warmup lasts 50 steps, after which a cosine schedule decays it to zero. \
A peak learning rate of 1e-4 works for LoRA rank 8.

SwanLab records loss curves offline. Sync them to the cloud later with the swanlab sync command.

Images are resized so the longest edge gives at most 288 by 288 pixels. \
A COCO photo then becomes about 77 visual tokens in the prompt.
"""

ZH_GBK = """混合专家训练说明

负载均衡损失让每个专家的使用频率大致相同，防止路由器把所有词元都送到同一个专家。这个系数通常设为零点零一。

量化到四比特以后，基座模型的显存占用降低到原来的四分之一左右。适配器本身仍然用十六位浮点数训练。

每个线性层旁边放四个低秩专家，路由器为每个词元挑选两个专家，再按门控权重把它们的输出相加。
"""

ZH_UTF16 = """桌面助手说明

知识库索引保存在知识库目录旁边的隐藏文件夹中，只有新增或修改过的文件才会重新计算向量。

审阅者智能体检查回答是否解决了用户的问题，不合格时要求回答者重写一次。

输入“总结对话”后，会话记录会被保存成一份 Markdown 报告。
"""

ZH_BIG5 = """繁體中文說明文件。模型支援繁體字的檢索，知識庫會自動識別文字編碼。
使用者可以把論文放進知識庫，然後用中文提問，系統會列出最相關的段落和頁碼。
"""

PDF_PAGES = [
    "This report describes how the fine-tuned captioning model was evaluated on held-out images.",
    "第二页：评测使用 BLEU 和 CIDEr 指标，在五千张验证图像上计算平均分数。",
    "Page three: the vision encoder splits each image into patches of 16 pixels, "
    "and neighbouring patches are merged two by two before they reach the language model.",
]

# query -> (expected source, text that the expected chunk contains, page)
QUERIES = {
    "how does gradient checkpointing save GPU memory": ("en_guide.md", "Gradient checkpointing", None),
    "how long is the learning rate warmup": ("en_guide.md", "warmup lasts 50 steps", None),
    "负载均衡损失有什么作用": ("zh_gbk.txt", "负载均衡损失", None),
    "哪些文件会重新计算向量": ("zh_utf16.txt", "重新计算向量", None),
    "审阅者智能体做什么": ("zh_utf16.txt", "审阅者智能体", None),
    "vision encoder patch size in pixels": ("report.pdf", "patches of 16 pixels", 3),
    "评测使用哪些指标": ("report.pdf", "CIDEr", 2),
}


def write_pdf(path: Path, pages: list[str], font_cjk: bool = True) -> Path:
    """Multi-page PDF; pages containing CJK use reportlab's built-in STSong-Light CID font."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.pdfgen import canvas

    if font_cjk:
        pdfmetrics.registerFont(UnicodeCIDFont("STSong-Light"))
    c = canvas.Canvas(str(path), pagesize=A4)
    for text in pages:
        cjk = any("\u4e00" <= ch <= "\u9fff" for ch in text)
        c.setFont("STSong-Light" if cjk else "Helvetica", 11)
        y, line, width = 800, "", 40 if cjk else 90  # wrap by characters
        for word in (list(text) if cjk else text.split(" ")):
            cand = line + word if cjk else (line + " " + word).strip()
            if len(cand) > width:
                c.drawString(40, y, line)
                y, line = y - 16, word
            else:
                line = cand
        if line:
            c.drawString(40, y, line)
        c.showPage()
    c.save()
    return path


def write_blank_pdf(path: Path, n_pages: int = 2) -> Path:
    """A 'scanned' PDF: pages with drawings but no text layer."""
    from reportlab.pdfgen import canvas

    c = canvas.Canvas(str(path))
    for _ in range(n_pages):
        c.rect(50, 50, 300, 400, fill=1)
        c.showPage()
    c.save()
    return path


def write_encrypted_pdf(src: Path, dest: Path, user_password: str = "secret") -> Path:
    import pypdf

    writer = pypdf.PdfWriter(clone_from=str(src))
    writer.encrypt(user_password=user_password, owner_password="owner", algorithm="AES-256")
    with open(dest, "wb") as f:
        writer.write(f)
    return dest


def build_kb(root: Path) -> Path:
    """A knowledge base folder with every kind of file the loaders must handle."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "en_guide.md").write_text(EN_GUIDE, encoding="utf-8")
    (root / "zh_gbk.txt").write_bytes(ZH_GBK.encode("gbk"))
    (root / "zh_utf16.txt").write_bytes(ZH_UTF16.encode("utf-16"))  # with BOM
    (root / "zh_big5.txt").write_bytes(ZH_BIG5.encode("big5"))
    write_pdf(root / "report.pdf", PDF_PAGES)
    write_encrypted_pdf(root / "report.pdf", root / "locked.pdf")
    write_blank_pdf(root / "scanned.pdf")
    (root / "corrupt.pdf").write_bytes(b"%PDF-1.7\n1 0 obj << /Type /Catalog >>\nthis is not a pdf\n")
    (root / "empty.txt").write_bytes(b"")
    (root / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    return root
