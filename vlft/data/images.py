"""Image checks shared by the data stages: does this file decode completely?"""

from __future__ import annotations

import io
from pathlib import Path

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


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
