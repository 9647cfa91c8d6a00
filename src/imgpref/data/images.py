"""Robust image loading: every file either becomes an upright 8-bit RGB image or an `ImageLoadError` with a reason.

What `load_image` does, in order:
1. refuses empty files and images whose header announces more than `max_pixels` pixels (PIL's decompression-bomb
   check runs on the header, before any pixel is allocated; its warning threshold is treated as an error too);
2. decodes at full size by default, as the reference code of every published scorer does. Only when
   `draft_size` is given (`imgpref score --fast`), JPEGs are decoded at reduced size by libjpeg (`Image.draft`,
   scale 1/2, 1/4 or 1/8) with both sides kept >= `draft_size`. Callers pass at least twice the model's input
   resolution, so the model's own resize still downsamples by >= 2x; decoding a 1024x1024 JPEG for a 224-pixel
   model costs about a quarter, and scores move slightly (measured deviation: README, "Parity with reference
   code");
3. decodes fully (truncated files raise here: PIL's LOAD_TRUNCATED_IMAGES is left off on purpose);
4. takes the first frame of animated GIF/WebP/APNG, applies the EXIF orientation (`ImageOps.exif_transpose`),
   so photos are scored upright;
5. converts to RGB: CMYK and YCbCr via PIL; 16-bit and 32-bit integer greyscale are rescaled (not clipped) to
   8 bits; float images are taken as [0, 1]; images with transparency (RGBA, LA, palette with a transparent
   colour) are composited over a white background, as a viewer shows them (`to_rgb`; the same rule as
   transformers' `CLIPImageProcessor`, so PickScore sees what its processor would give it).
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 89_478_485  # PIL's own default (~ 0.25 GiB of 24-bit pixels)
BACKGROUND = (255, 255, 255)


class ImageLoadError(ValueError):
    """An image that cannot be used; `reason` is one short line for reports."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL image -> 8-bit RGB: transparency composited over white, 16/32-bit and float rescaled."""
    mode = im.mode
    if mode == "RGB" and "transparency" not in im.info:
        return im
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(im).astype(np.float64)
        # 16-bit files hold 0..65535; a mode-"I" image may be 16-bit data widened, or 32-bit.
        top = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) <= 65535 else float(2**32 - 1)
        arr = np.clip(np.round(arr * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        arr = np.clip(np.round(arr * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode in ("P", "L", "RGB") and "transparency" in im.info)
    if has_alpha:
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return im.convert("RGB")


_to_rgb = to_rgb  # the former private name, still imported by some callers


def load_image(
    path: str | Path | bytes,
    *,
    draft_size: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> Image.Image:
    """Open `path` as an upright 8-bit RGB PIL image (see the module docstring for every step).

    draft_size: for JPEGs, decode at reduced size keeping both sides >= draft_size (None: full size).
    max_pixels: images whose header announces more pixels are refused without decoding (None: no limit).
    Raises ImageLoadError (a ValueError) with a one-line reason for anything unusable.
    `path` may also be encoded image bytes (e.g. embedded in a Parquet manifest): the same checks apply.
    """
    if isinstance(path, (bytes, bytearray, memoryview)):
        data = bytes(path)
        path, source, size = "embedded image bytes", io.BytesIO(data), len(data)
    else:
        path = source = Path(path)
        try:
            size = os.path.getsize(path)
        except OSError as exc:
            raise ImageLoadError(path, f"cannot read file: {exc.strerror or exc}") from exc
    if size == 0:
        raise ImageLoadError(path, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as im:
                w, h = im.size
                if max_pixels is not None and w * h > max_pixels:
                    raise ImageLoadError(
                        path, f"decompression bomb: {w}x{h} = {w * h} pixels exceeds the limit of {max_pixels}"
                    )
                if getattr(im, "is_animated", False):
                    im.seek(0)
                if draft_size and im.format == "JPEG":
                    im.draft("RGB", (int(draft_size), int(draft_size)))
                im.load()
                ImageOps.exif_transpose(im, in_place=True)  # no copy when the image is already upright
                out = to_rgb(im)
                # leaving `with` closes only the file; pixels still backed by its memory map (uncompressed formats
                # read from a path) are copied, any other image already owns its pixels: no full-size copy
                return out.copy() if out is im and (im.readonly or getattr(im, "map", None) is not None) else out
    except ImageLoadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageLoadError(path, f"decompression bomb: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageLoadError(path, "not an image (PIL cannot identify the format)") from exc
    except MemoryError as exc:
        raise ImageLoadError(path, "out of memory while decoding") from exc
    except Exception as exc:  # noqa: BLE001  (any decoder failure becomes a per-file error, never a crash)
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "truncated" in msg.lower():
            msg = f"truncated or corrupt file ({msg})"
        raise ImageLoadError(path, f"{type(exc).__name__}: {msg}") from exc
