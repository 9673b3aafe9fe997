"""Sources: files, folders, http(s) URLs and list files -> documents on local disk.

Local files are read only inside the folders the user named (symlinks resolved first). URLs are
fetched politely: robots.txt, a per-host delay, a timeout, a size cap and a content-type check;
``crawl_depth`` follows same-site links found in fetched HTML pages. Every fetched document is stored
under the cache folder so the rest of the pipeline (and the knowledge base) only sees local files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import urllib.robotparser
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)

USER_AGENT = "vlft-expand/1.0 (+https://github.com/; data expansion)"
DOC_SUFFIXES = (".pdf", ".html", ".htm", ".md", ".markdown", ".mdx", ".txt", ".docx")
LIST_SUFFIXES = (".list", ".urls", ".sources")
# content-type -> suffix the extractor dispatches on.
CONTENT_TYPES = {
    "text/html": ".html", "application/xhtml+xml": ".html", "application/pdf": ".pdf",
    "text/plain": ".txt", "text/markdown": ".md", "text/x-markdown": ".md",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
}
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp")


class SourceError(Exception):
    """One source cannot be used; ``str(e)`` is the one-line reason (the run goes on)."""


@dataclass
class Document:
    """One document ready for extraction: a local file plus where it came from."""

    origin: str                     # the file path or URL the user (or a crawl) named
    path: Path                      # local file (the original, or the fetched copy in the cache)
    root: Path | None = None        # local assets (HTML/Markdown images) must resolve inside it
    url: str | None = None          # set for fetched documents: relative links resolve against it
    etag: str | None = None
    last_modified: str | None = None
    unchanged: bool = False         # the server said 304 / the file hash matches the last sync
    links: list[str] = field(default_factory=list)

    @property
    def suffix(self) -> str:
        return self.path.suffix.lower()


def is_url(s: str) -> bool:
    return s.lower().startswith(("http://", "https://"))


def inside(path: Path, root: Path) -> bool:
    """True if ``path`` (symlinks resolved) lies in ``root`` (resolved)."""
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except (ValueError, OSError):
        return False


# -- local -------------------------------------------------------------------------------------
def expand_sources(sources: list[str], base: Path | None = None) -> Iterator[tuple[str, Path | None]]:
    """(origin, allowed root) for every document named by ``sources``: URLs stay URLs (root None);
    a folder yields its documents (root = the folder); a file yields itself (root = its folder);
    a list file (``.list``/``.urls``/``.sources``, or a ``.txt`` whose lines are all sources) yields its
    lines, relative paths against its folder. Missing paths raise SourceError per entry via the caller."""
    for raw in sources:
        s = raw.strip()
        if not s or s.startswith("#"):
            continue
        if is_url(s):
            yield s, None
            continue
        p = Path(os.path.expanduser(s))
        if base is not None and not p.is_absolute():
            p = base / p
        if p.is_dir():
            root = p.resolve()
            for f in sorted(p.rglob("*")):
                if any(part.startswith(".") for part in f.relative_to(p).parts):
                    continue
                if f.suffix.lower() in DOC_SUFFIXES and f.is_file():
                    if not inside(f, root):
                        log.warning("%s: skipped, symlink points outside %s", f, root)
                        continue
                    yield str(f), root
        elif p.is_file() and _is_list_file(p):
            from multi_agent.rag.loaders import SkipFile, load_text
            try:
                lines = load_text(p).pages[0][1].splitlines()
            except SkipFile as e:
                yield f"{p}: {e}", None
                continue
            yield from expand_sources(lines, p.parent)
        else:
            # A file named on its own: its assets (HTML/Markdown images) must lie in its real folder.
            yield str(p), (p.resolve().parent if p.exists() else None)


def _is_list_file(p: Path) -> bool:
    if p.suffix.lower() in LIST_SUFFIXES:
        return True
    if p.suffix.lower() != ".txt" or p.stat().st_size > 1 << 20:
        return False
    lines = [ln.strip() for ln in p.read_text(encoding="utf-8", errors="replace").splitlines()
             if ln.strip() and not ln.strip().startswith("#")]
    return bool(lines) and all(is_url(ln) or (Path(ln).suffix.lower() in DOC_SUFFIXES and " " not in ln)
                               for ln in lines)


def local_document(origin: str, root: Path | None) -> Document:
    p = Path(origin)
    if not p.exists():
        raise SourceError("no such file or folder")
    if p.suffix.lower() not in DOC_SUFFIXES:
        raise SourceError(f"unsupported file type '{p.suffix}' (supported: {', '.join(DOC_SUFFIXES)})")
    if root is not None and not inside(p, root):
        raise SourceError(f"resolves outside {root} (symlink?)")
    return Document(origin=origin, path=p, root=root)


# -- web ---------------------------------------------------------------------------------------
@dataclass
class FetchConfig:
    timeout: float = 20.0           # seconds per request
    max_bytes: int = 50 << 20       # a response larger than this is refused
    delay: float = 1.0              # seconds between two requests to the same host
    respect_robots: bool = True


@dataclass
class Response:
    url: str
    status: int
    content_type: str
    data: bytes
    etag: str | None = None
    last_modified: str | None = None


class Fetcher:
    """HTTP GET with robots.txt, a per-host delay, a timeout, a size cap and conditional requests."""

    def __init__(self, cfg: FetchConfig | None = None):
        self.cfg = cfg or FetchConfig()
        self._robots: dict[str, urllib.robotparser.RobotFileParser | None] = {}
        self._last: dict[str, float] = {}
        self._host_delay: dict[str, float] = {}
        self._lock = threading.Lock()
        # Redirects to other hosts are followed by urllib; the robots check covers the first URL.
        self._opener = urllib.request.build_opener()

    def _wait(self, host: str) -> None:
        with self._lock:
            now = time.monotonic()
            wait = self._last.get(host, -1e9) + self._host_delay.get(host, self.cfg.delay) - now
            self._last[host] = now + max(wait, 0)
        if wait > 0:
            time.sleep(wait)

    def allowed(self, url: str) -> bool:
        if not self.cfg.respect_robots:
            return True
        parts = urllib.parse.urlsplit(url)
        key = f"{parts.scheme}://{parts.netloc}"
        if key not in self._robots:
            rp = urllib.robotparser.RobotFileParser()
            try:
                r = self._get(key + "/robots.txt", max_bytes=1 << 20)
                rp.parse(r.data.decode("utf-8", errors="replace").splitlines())
            except SourceError:
                rp = None  # no robots.txt (404, timeout): everything is allowed
            self._robots[key] = rp
            delay = rp.crawl_delay(USER_AGENT) if rp is not None else None
            if delay:   # the site's Crawl-delay wins when it asks for more patience than ours
                self._host_delay[parts.netloc] = max(float(delay), self.cfg.delay)
        rp = self._robots[key]
        return rp is None or rp.can_fetch(USER_AGENT, url)

    def get(self, url: str, etag: str | None = None, last_modified: str | None = None,
            accept: tuple[str, ...] | None = None) -> Response:
        """The response (status 304 with empty data when the validators still match)."""
        if not self.allowed(url):
            raise SourceError("disallowed by robots.txt")
        return self._get(url, etag=etag, last_modified=last_modified, accept=accept)

    def _get(self, url: str, etag: str | None = None, last_modified: str | None = None,
             accept: tuple[str, ...] | None = None, max_bytes: int | None = None) -> Response:
        max_bytes = max_bytes or self.cfg.max_bytes
        headers = {"User-Agent": USER_AGENT}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        self._wait(urllib.parse.urlsplit(url).netloc)
        req = urllib.request.Request(url, headers=headers)
        try:
            with self._opener.open(req, timeout=self.cfg.timeout) as resp:
                ctype = (resp.headers.get_content_type() or "").lower()
                if accept is not None and not ctype.startswith(accept):   # before reading the body
                    raise SourceError(f"content type '{ctype}' is not one of {', '.join(accept)}")
                length = resp.headers.get("Content-Length")
                if length and length.isdigit() and int(length) > max_bytes:
                    raise SourceError(f"too large ({int(length)} bytes > {max_bytes})")
                data = resp.read(max_bytes + 1)
                if len(data) > max_bytes:
                    raise SourceError(f"too large (over {max_bytes} bytes)")
                return Response(resp.geturl(), resp.status, ctype, data, resp.headers.get("ETag"),
                                resp.headers.get("Last-Modified"))
        except urllib.error.HTTPError as e:
            if e.code == 304:
                return Response(url, 304, "", b"", etag, last_modified)
            raise SourceError(f"HTTP {e.code} {e.reason}") from None
        except urllib.error.URLError as e:
            raise SourceError(f"cannot fetch ({e.reason})") from None
        except (TimeoutError, OSError) as e:
            raise SourceError(f"cannot fetch ({e.__class__.__name__}: {e})") from None


def cache_name(url: str, suffix: str) -> str:
    """A stable, readable file name for a URL: last path part + short hash."""
    parts = urllib.parse.urlsplit(url)
    stem = Path(parts.path).stem or parts.netloc
    stem = re.sub(r"[^\w.-]+", "_", stem)[:60] or "page"
    return f"{stem}-{hashlib.sha256(url.encode()).hexdigest()[:10]}{suffix}"


def fetch_document(fetcher: Fetcher, url: str, download_dir: Path, state: dict | None = None) -> Document:
    """GET ``url`` (conditionally when ``state`` holds its validators) into ``download_dir``."""
    state = state or {}
    r = fetcher.get(url, state.get("etag"), state.get("last_modified"), accept=tuple(CONTENT_TYPES))
    if r.status == 304 and state.get("path") and Path(state["path"]).is_file():
        return Document(origin=url, path=Path(state["path"]), url=url, etag=state.get("etag"),
                        last_modified=state.get("last_modified"), unchanged=True)
    if r.status == 304:  # validators matched but our copy is gone: fetch it again
        r = fetcher.get(url, accept=tuple(CONTENT_TYPES))
    suffix = CONTENT_TYPES[next(t for t in CONTENT_TYPES if r.content_type.startswith(t))]
    path = download_dir / cache_name(url, suffix)
    download_dir.mkdir(parents=True, exist_ok=True)
    from vlft.utils.io import atomic_write
    with atomic_write(path, "wb") as f:
        f.write(r.data)
    return Document(origin=url, path=path, url=r.url, etag=r.etag, last_modified=r.last_modified)


def same_site(a: str, b: str) -> bool:
    pa, pb = urllib.parse.urlsplit(a), urllib.parse.urlsplit(b)
    return (pa.scheme, pa.netloc.lower()) == (pb.scheme, pb.netloc.lower())


# Links a crawl never follows: clearly not documents (saves a request and a "skipped" line each).
NOT_DOCUMENTS = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".svg", ".ico", ".css", ".js", ".zip", ".gz", ".tar",
                 ".rar", ".7z", ".exe", ".dmg", ".mp3", ".mp4", ".avi", ".mov", ".woff", ".woff2", ".ttf", ".xml",
                 ".json", ".csv", ".xls", ".xlsx", ".ppt", ".pptx")


def site_links(doc: Document, start: str) -> list[str]:
    """Links of a fetched page that stay on ``start``'s site (scheme + host + port), fragments dropped,
    obvious non-documents (images, archives, scripts) left out."""
    out: list[str] = []
    for link in doc.links:
        link = urllib.parse.urldefrag(urllib.parse.urljoin(doc.url or start, link))[0]
        if urllib.parse.urlsplit(link).path.lower().endswith(NOT_DOCUMENTS):
            continue
        if is_url(link) and same_site(link, start) and link not in out:
            out.append(link)
    return out


def load_state(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
