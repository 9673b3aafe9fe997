"""Images for every stage: one loader (path, file:// or http(s) URL, or PIL image) and one
"does this file decode completely?" check."""

from __future__ import annotations

import io
import urllib.request
from pathlib import Path
from typing import Any

from vlft.data.vocab import IMAGE_EXTENSIONS
from vlft.errors import UserError

__all__ = ["IMAGE_EXTENSIONS", "ImageError", "image_problem", "load_image", "URL_TIMEOUT_S"]

URL_TIMEOUT_S = 30


class ImageError(UserError, ValueError):
    """An image could not be read; the message names it and says why."""


def load_image(src: Any):
    """PIL RGB image, fully decoded, from a PIL image, a path, or a file:// / http(s):// URL.

    A truncated or non-image file raises ``ImageError`` with one line naming it.
    """
    from PIL import Image, UnidentifiedImageError

    if isinstance(src, Image.Image):
        return src.convert("RGB")
    s = str(src)
    try:
        if s.startswith(("http://", "https://")):
            with urllib.request.urlopen(s, timeout=URL_TIMEOUT_S) as r:  # noqa: S310 (user-given URL)
                data = r.read()
            img = Image.open(io.BytesIO(data))
        else:
            path = Path(s[len("file://"):] if s.startswith("file://") else s)
            if not path.is_file():
                raise ImageError(f"{s}: image file not found")
            img = Image.open(path)
        with img:
            img.load()
            return img.convert("RGB")
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{s}: not a readable image (unknown or corrupt format)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        # truncated files, network errors (URLError is an OSError), broken headers
        raise ImageError(f"{s}: cannot read image ({e.__class__.__name__}: {str(e).strip()})") from None


def image_problem(src: str | Path | bytes) -> str | None:
    """None if ``src`` (path or bytes) is an image that decodes to the last pixel, else why not.

    ``Image.verify()`` alone misses truncated JPEGs, so the pixels are decoded (a few ms for COCO).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        if isinstance(src, (bytes, bytearray)):
            fh = io.BytesIO(src)
        else:
            p = Path(src)
            if not p.is_file():
                return "file not found"
            if p.stat().st_size == 0:
                return "empty file"
            fh = p.open("rb")
        with fh, Image.open(fh) as im:
            im.load()
            if im.width < 1 or im.height < 1:
                return "image has no pixels"
    except UnidentifiedImageError:
        return "not an image file"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        return f"unreadable image ({str(e).strip() or e.__class__.__name__})"
    return None
