"""Loaders on real files: encodings detected, PDFs with page numbers, bad files skipped with a reason."""

from __future__ import annotations

import pytest

from multi_agent.rag.loaders import SkipFile, detect_encoding, load_file

from rag_files import PDF_PAGES, ZH_BIG5, ZH_GBK, ZH_UTF16, write_blank_pdf, write_encrypted_pdf, write_pdf


@pytest.mark.parametrize("text,codec,expected", [
    (ZH_GBK, "gbk", ("gb18030", "gbk")),
    (ZH_GBK, "gb18030", ("gb18030",)),
    (ZH_GBK[:30], "gbk", ("gb18030", "gbk")),  # short GBK is where plain detectors say cp949
    (ZH_BIG5, "big5", ("big5", "big5hkscs", "cp950")),
    (ZH_UTF16, "utf-16", ("utf-16",)),
    (ZH_UTF16, "utf-8-sig", ("utf-8-sig",)),
    (ZH_UTF16, "utf-8", ("utf-8",)),
    ("Plain English notes about LoRA.\n", "ascii", ("utf-8",)),
])
def test_encoding_detected_and_text_round_trips(tmp_path, text, codec, expected):
    path = tmp_path / f"doc-{codec}.txt"
    path.write_bytes(text.encode(codec))
    assert detect_encoding(path.read_bytes()) in expected
    doc = load_file(path)
    assert doc.pages == [(None, text)]


def test_crlf_normalised(tmp_path):
    p = tmp_path / "win.log"
    p.write_bytes("第一行。\r\nsecond line\r\n".encode("gbk"))
    assert load_file(p).pages[0][1] == "第一行。\nsecond line\n"


@pytest.mark.parametrize("data,reason", [(b"", "empty file"), (b"  \n\n ", "empty file"),
                                         (b"\x00\x01\x02\xff\xfe\x00\x10" * 50, None)])
def test_empty_or_binary_text_skipped(tmp_path, data, reason):
    p = tmp_path / "x.txt"
    p.write_bytes(data)
    with pytest.raises(SkipFile) as e:
        load_file(p)
    if reason:
        assert str(e.value) == reason


def test_pdf_pages_numbered(tmp_path):
    pdf = write_pdf(tmp_path / "r.pdf", PDF_PAGES)
    doc = load_file(pdf)
    assert [p for p, _ in doc.pages] == [1, 2, 3]
    assert "CIDEr" in doc.pages[1][1] and "五千张验证图像" in doc.pages[1][1]
    assert "16 pixels" in doc.pages[2][1]


def test_pdf_text_less_pages_dropped_but_numbers_kept(tmp_path):
    from reportlab.pdfgen import canvas

    c = canvas.Canvas(str(tmp_path / "mixed.pdf"))
    c.drawString(50, 800, "first page text")
    c.showPage()
    c.rect(10, 10, 100, 100)  # a scanned page: no text layer
    c.showPage()
    c.drawString(50, 800, "third page text")
    c.showPage()
    c.save()
    assert [p for p, _ in load_file(tmp_path / "mixed.pdf").pages] == [1, 3]


def test_encrypted_pdf_skipped_with_reason(tmp_path):
    src = write_pdf(tmp_path / "r.pdf", PDF_PAGES)
    locked = write_encrypted_pdf(src, tmp_path / "locked.pdf")
    with pytest.raises(SkipFile, match="encrypted PDF"):
        load_file(locked)


def test_owner_password_only_pdf_is_read(tmp_path):
    src = write_pdf(tmp_path / "r.pdf", PDF_PAGES)
    restricted = write_encrypted_pdf(src, tmp_path / "restricted.pdf", user_password="")
    assert len(load_file(restricted).pages) == 3


def test_corrupt_and_scanned_pdf_skipped(tmp_path):
    bad = tmp_path / "bad.pdf"
    bad.write_bytes(b"%PDF-1.4\ngarbage garbage\n")
    with pytest.raises(SkipFile, match="corrupt or unreadable PDF"):
        load_file(bad)
    with pytest.raises(SkipFile, match="no extractable text in 2 page"):
        load_file(write_blank_pdf(tmp_path / "scan.pdf"))


def test_unsupported_suffix(tmp_path):
    p = tmp_path / "a.odt"
    p.write_bytes(b"PK")
    with pytest.raises(SkipFile, match="unsupported file type '.odt'"):
        load_file(p)
