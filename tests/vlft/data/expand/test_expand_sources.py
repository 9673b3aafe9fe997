"""Sources: local folders and list files (never outside the named folders) and polite HTTP fetching
against a real local server (robots.txt, content type, size cap, conditional requests)."""

from __future__ import annotations

import pytest

from vlft.data.expand.sources import (Document, FetchConfig, Fetcher, SourceError, expand_sources, fetch_document,
                                      local_document, site_links)


def test_folder_and_list_file(docs_dir, tmp_path):
    found = [p for p, _ in expand_sources([str(docs_dir)])]
    assert [p.split("/")[-1] for p in found] == ["notes.md", "page.html", "plain.txt", "report.pdf"]
    lst = tmp_path / "sources.txt"
    lst.write_text("# my sources\ndocs/report.pdf\nhttps://example.org/a.html\n", encoding="utf-8")
    got = list(expand_sources([str(lst)]))
    assert got[0][0].endswith("docs/report.pdf") and got[1] == ("https://example.org/a.html", None)


def test_symlink_out_of_folder_is_skipped(docs_dir, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("do not read", encoding="utf-8")
    (docs_dir / "link.txt").symlink_to(secret)
    assert not any(p.endswith("link.txt") for p, _ in expand_sources([str(docs_dir)]))
    with pytest.raises(SourceError, match="outside"):
        local_document(str(docs_dir / "link.txt"), docs_dir.resolve())


def test_unsupported_and_missing(tmp_path):
    (tmp_path / "a.xlsx").write_bytes(b"x")
    with pytest.raises(SourceError, match="unsupported"):
        local_document(str(tmp_path / "a.xlsx"), tmp_path)
    with pytest.raises(SourceError, match="no such"):
        local_document(str(tmp_path / "nope.pdf"), tmp_path)


def _fetcher(**kw):
    return Fetcher(FetchConfig(delay=0, timeout=5, **kw))


def test_fetch_robots_type_size_and_404(site, tmp_path):
    base, _, server = site
    f = _fetcher()
    doc = fetch_document(f, base + "/index.html", tmp_path / "dl")
    assert doc.path.suffix == ".html" and doc.etag and doc.path.read_bytes().startswith(b"<html>")
    with pytest.raises(SourceError, match="robots.txt"):
        fetch_document(f, base + "/private/secret.html", tmp_path / "dl")
    assert "/private/secret.html" not in server.hits          # never requested
    with pytest.raises(SourceError, match="content type"):
        fetch_document(f, base + "/big.bin", tmp_path / "dl")
    with pytest.raises(SourceError, match="HTTP 404"):
        fetch_document(f, base + "/missing.html", tmp_path / "dl")
    with pytest.raises(SourceError, match="too large"):
        fetch_document(_fetcher(max_bytes=100), base + "/index.html", tmp_path / "dl")


def test_conditional_get_304(site, tmp_path):
    base, root, server = site
    f = _fetcher()
    first = fetch_document(f, base + "/about.html", tmp_path / "dl")
    state = {"etag": first.etag, "last_modified": first.last_modified, "path": str(first.path)}
    again = fetch_document(f, base + "/about.html", tmp_path / "dl", state)
    assert again.unchanged and again.path == first.path
    (root / "about.html").write_text("<p>changed</p>", encoding="utf-8")
    changed = fetch_document(f, base + "/about.html", tmp_path / "dl", state)
    assert not changed.unchanged and changed.etag != first.etag


def test_rate_limit_waits_between_requests(site):
    import time

    base, _, _ = site
    f = Fetcher(FetchConfig(delay=0.3, respect_robots=False))
    t = time.perf_counter()
    for _ in range(3):
        f.get(base + "/about.html")
    assert time.perf_counter() - t >= 0.55


def test_unreachable_is_one_line():
    with pytest.raises(SourceError, match="cannot fetch"):
        _fetcher().get("http://127.0.0.1:9/x.html")


def test_site_links_same_site_only():
    doc = Document(origin="http://a.test/dir/p.html", path=None, url="http://a.test/dir/p.html",  # type: ignore[arg-type]
                   links=["q.html#top", "/r.pdf", "http://b.test/x", "mailto:x@y", "q.html", "img/a.PNG", "s.css"])
    assert site_links(doc, "http://a.test/") == ["http://a.test/dir/q.html", "http://a.test/r.pdf"]


def test_robots_crawl_delay_is_honoured(site):
    import time

    base, root, _ = site
    (root / "robots.txt").write_text("User-agent: *\nCrawl-delay: 1\nDisallow: /private/\n", encoding="utf-8")
    f = _fetcher()
    f.get(base + "/about.html")          # reads robots.txt first
    t = time.perf_counter()
    f.get(base + "/about.html")
    assert time.perf_counter() - t >= 0.9   # robotparser reads whole seconds only


def test_timeout_is_one_line(site):
    base, _, _ = site
    f = Fetcher(FetchConfig(delay=0, timeout=0.5, respect_robots=False))
    with pytest.raises(SourceError, match="cannot fetch.*timed out"):
        f.get(base + "/slow.html")
