"""JPEG decoding on the GPU for dataset scoring (`imgpref score --decode gpu`, `score_dataset(decode="gpu")`).

On a GPU the CPU time per image is the throughput ceiling, and decoding is most of it. This stage replaces the
CPU decode + preprocess (`stages.Decoder`) on CUDA:
1. a cheap header check on the CPU (PIL reads the markers only, no pixels) picks the rows the GPU can take:
   baseline/progressive JPEGs in RGB or greyscale, upright (EXIF orientation 1 or none), within `max_pixels`,
   ending with the end-of-image marker. Anything else (PNG/WebP/..., CMYK or YCCK JPEGs, rotated photos,
   truncated or unreadable files, decompression bombs) goes through the CPU path, per image, so bad files are
   reported exactly as the CPU engine reports them;
2. the selected JPEGs are decoded in one batched `torchvision.io.decode_jpeg(list, device="cuda")` (nvJPEG);
   a batch the decoder rejects is retried image by image, and an image it still rejects goes to the CPU path;
3. per backbone group, images of the same size are stacked and turned into model input on the device: for
   open_clip's centre-crop transform and transformers' CLIP processor, PIL's own arithmetic in tensor ops
   (`pil_resize_center_crop`: antialiased bicubic, one pass per axis rounded to 8 bits, centre crop placed as
   each library places it, then normalise); for other backbones their differentiable transform
   `pixels_to_input` (the same kernel in float, within ~2 grey levels of PIL).

Agreement with the CPU path (tests/score/test_gpu_decode.py): with the CPU build of the decoder (libjpeg-turbo,
as PIL) the decoded pixels are identical, model inputs differ only in rare pixels by one grey level, and the
scores of the tiny test scorer agree within the stated tolerance. nvJPEG's IDCT and chroma upsampling differ
from libjpeg's by a few grey levels; that difference was not measured here (no GPU). `--fast` JPEG draft
decoding does not apply: the GPU decodes at full size.

The stage is device-agnostic (`TensorDecoder(..., device="cpu")` runs the same code with torchvision's CPU
decoder, which is how it is tested without a GPU); `check_gpu_decode` is what makes the public option CUDA-only.
"""
from __future__ import annotations

import io
import warnings
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from imgpref.scorers.stages import SAMPLE_COLUMNS, Decoder, RunSpec, _text

DECODE_MODES = ("cpu", "gpu")
_EOI = b"\xff\xd9"
_ORIENTATION = 0x0112  # EXIF tag


def check_decode_mode(decode: str) -> str:
    if decode not in DECODE_MODES:
        raise ValueError(f"--decode {decode!r}: use cpu (PIL, the default) or gpu (nvJPEG on the CUDA device)")
    return decode


def check_gpu_decode(device: torch.device) -> None:
    """Raise ValueError unless `--decode gpu` can run: CUDA available, the run on a CUDA device, torchvision's
    image ops present."""
    if not torch.cuda.is_available():
        raise ValueError("--decode gpu needs a CUDA device, and torch.cuda.is_available() is False here; use "
                         "--decode cpu (the default)")
    if device.type != "cuda":
        raise ValueError(f"--decode gpu decodes on the model's CUDA device, but the run is on {device}; pass "
                         "--device cuda, or use --decode cpu")
    try:
        from torchvision.io import decode_jpeg  # noqa: F401
    except ImportError as exc:
        raise ValueError(f"--decode gpu needs torchvision's image ops ({exc}); use --decode cpu") from exc


def gpu_reason(data: bytes, max_pixels: int | None) -> str | None:
    """Why the CPU path must decode these bytes (None: the GPU can): a header-only look, no pixels decoded."""
    if len(data) < 4 or data[:3] != b"\xff\xd8\xff":
        return "not a JPEG"
    if data.rstrip(b"\0")[-2:] != _EOI:
        return "no end-of-image marker"  # truncated: the CPU loader reports it
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a bomb warning is the CPU loader's to report
            with Image.open(io.BytesIO(data)) as im:
                if im.format != "JPEG" or im.mode not in ("RGB", "L"):
                    return f"{im.format} {im.mode}"  # CMYK/YCCK: PIL's conversion is the reference
                w, h = im.size
                if max_pixels is not None and w * h > max_pixels:
                    return "over max_pixels"
                if im.getexif().get(_ORIENTATION, 1) not in (0, 1):
                    return "EXIF orientation"
    except Exception as exc:  # noqa: BLE001  (the CPU loader gives the reason)
        return f"header: {type(exc).__name__}"
    return None


def _decode_jpegs(blobs: Sequence[bytes], device: torch.device) -> list[torch.Tensor | None]:
    """uint8 [3, H, W] tensors on `device` (None where the decoder rejects the bytes): one batched call, retried
    one by one if the batch fails (the batched call returns nothing when any image fails)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    with warnings.catch_warnings():
        # torchvision >= 0.29 deprecates its decoders (TorchCodec); frombuffer warns that bytes are read-only
        # (the decoder only reads them)
        warnings.simplefilter("ignore")
        data = [torch.frombuffer(b, dtype=torch.uint8) for b in blobs]
        try:
            return list(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
        except RuntimeError:
            out: list[torch.Tensor | None] = []
            for t in data:
                try:
                    out.append(decode_jpeg([t], mode=ImageReadMode.RGB, device=device)[0])
                except RuntimeError:
                    out.append(None)
            return out


def pil_resize_center_crop(u8: torch.Tensor, size: int, crop: int | None = None, offsets: str = "round") -> torch.Tensor:
    """uint8 images [B, 3, H, W] -> float [B, 3, crop, crop] in [0, 1]: the short side to `size`, a centre crop of
    `crop` (default `size`; placed by `resize.crop_offset(offsets)`), as torchvision's Resize + CenterCrop
    (offsets "round") or CLIPImageProcessor (offsets "floor") do, computed the way PIL computes it: antialiased
    bicubic (PIL's kernel), horizontal pass then vertical pass, each rounded and clipped to 8 bits. Measured
    against PIL: the same values except rare pixels off by one grey level (one float pass instead gives errors of
    up to ~2.4 levels on textured images)."""
    import torch.nn.functional as F

    from imgpref.scorers.backbones.resize import crop_offset, short_side_size

    crop = size if crop is None else int(crop)
    h, w = u8.shape[-2:]
    nh, nw = short_side_size(h, w, size)
    x = u8.to(torch.float32)
    if nw != w:
        x = F.interpolate(x, size=(h, nw), mode="bicubic", antialias=True, align_corners=False).round_().clamp_(0, 255)
    if nh != h:
        x = F.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False).round_().clamp_(0, 255)
    top, left = crop_offset(nh - crop, offsets), crop_offset(nw - crop, offsets)
    return x[..., top:top + crop, left:left + crop].div_(255)


def tensor_transform(backbone: Any):
    """uint8 [B, 3, H, W] on the device -> model input: PIL's arithmetic (`pil_resize_center_crop`) for open_clip's
    centre-crop transform and for transformers' CLIP processor (its resize size, crop size and floor offsets), else
    the backbone's own differentiable transform `pixels_to_input`."""
    from imgpref.scorers.backbones.hf_clip_backbone import HFClipBackbone
    from imgpref.scorers.backbones.open_clip_backbone import OpenClipBackbone
    from imgpref.scorers.backbones.resize import normalize

    if isinstance(backbone, OpenClipBackbone) and backbone.resize_mode == "center_crop":
        size, mean, std = backbone.image_size, backbone.mean, backbone.std
        return lambda u8: normalize(pil_resize_center_crop(u8, size), mean, std)
    if isinstance(backbone, HFClipBackbone):
        size, crop, mean, std = backbone.resize_size, backbone.image_size, backbone.mean, backbone.std
        return lambda u8: normalize(pil_resize_center_crop(u8, size, crop, offsets="floor"), mean, std)
    return lambda u8: backbone.pixels_to_input(u8.to(torch.float32).div_(255))


class TensorDecoder:
    """The decode + preprocess stage on a torch device (see the module docstring); same batch in and out as
    `stages.Decoder`, except that `x<g>` are tensors on `device`."""

    def __init__(self, spec: RunSpec, backbones: Sequence[Any], device: str | torch.device, cpu: Decoder):
        self.spec = spec
        self.backbones = list(backbones)
        self.transforms = [tensor_transform(b) for b in self.backbones]
        self.device = torch.device(device)
        self.cpu = cpu
        self.counts = {"gpu": 0, "cpu": 0}  # images decoded on each path (fallbacks included in "cpu")

    def _bytes(self, batch: dict, r: int) -> bytes | None:
        data = batch["data"][r]
        if isinstance(data, (bytes, bytearray, memoryview)):
            return bytes(data)
        path = _text(batch["path"][r])
        if path is None:
            return None
        try:
            with open(path, "rb") as fh:
                return fh.read()
        except OSError:
            return None  # the CPU loader reports why

    @torch.inference_mode()
    def __call__(self, batch: dict) -> dict:
        spec = self.spec
        n = len(batch["key"])
        errors = [_text(e) for e in batch["error"]]
        gpu_rows, blobs, cpu_rows = [], [], []
        for r in range(n):
            if errors[r] is not None:
                continue
            data = self._bytes(batch, r)
            if data is None or gpu_reason(data, spec.max_pixels) is not None:
                cpu_rows.append(r)
            else:
                gpu_rows.append(r)
                blobs.append(data)
        images = _decode_jpegs(blobs, self.device) if blobs else []
        decoded = [(r, im) for r, im in zip(gpu_rows, images) if im is not None]
        cpu_rows = sorted(cpu_rows + [r for r, im in zip(gpu_rows, images) if im is None])
        xs = [torch.zeros((n,) + tuple(shape), dtype=torch.float32, device=self.device)
              for shape in spec.input_shapes]
        by_size: dict[tuple[int, int], list[tuple[int, torch.Tensor]]] = {}
        for r, im in decoded:
            by_size.setdefault(tuple(im.shape[-2:]), []).append((r, im))
        for g, transform in enumerate(self.transforms):
            for items in by_size.values():
                picked = [(r, im) for r, im in items if g in self.cpu.plan(batch["todo"][r])[0]]
                if not picked:
                    continue
                rows = [r for r, _ in picked]
                u8 = torch.stack([im for _, im in picked])
                x = transform(u8)
                if tuple(x.shape[1:]) != tuple(xs[g].shape[1:]):
                    raise ValueError(f"backbone group {g}: its tensor transform gave shape {tuple(x.shape[1:])}, its "
                                     f"preprocess {tuple(xs[g].shape[1:])}; use --decode cpu with this backbone")
                xs[g][torch.as_tensor(rows, device=self.device)] = x.to(torch.float32)
        if cpu_rows:
            sub = self.cpu({c: [batch[c][r] for r in cpu_rows] for c in SAMPLE_COLUMNS})
            idx = torch.as_tensor(cpu_rows, device=self.device)
            for g in range(len(xs)):
                xs[g][idx] = torch.as_tensor(np.asarray(sub[f"x{g}"])).to(self.device)
            for k, r in enumerate(cpu_rows):
                errors[r] = sub["error"][k]
        self.counts["gpu"] += len(decoded)
        self.counts["cpu"] += len(cpu_rows)
        out = {c: batch[c] for c in SAMPLE_COLUMNS if c != "data"}
        out["error"] = errors
        for g, x in enumerate(xs):
            out[f"x{g}"] = x
        return out


def make_decoder(decode: str, spec: RunSpec, scorers: Sequence[Any], device: torch.device,
                 check: bool = True) -> Decoder | TensorDecoder:
    """The decode stage of a run: `stages.Decoder` (CPU, PIL) or, for decode="gpu", a `TensorDecoder` on the
    run's CUDA device (`check=False` skips the CUDA checks: tests run the tensor path on the CPU)."""
    backbones = [scorers[spec.group_of.index(g)].backbone for g in range(len(spec.namespaces))]
    cpu = Decoder(spec, [b.preprocess for b in backbones])
    if check_decode_mode(decode) == "cpu":
        return cpu
    if check:
        check_gpu_decode(device)
    return TensorDecoder(spec, backbones, device, cpu)


__all__ = ["DECODE_MODES", "TensorDecoder", "check_decode_mode", "check_gpu_decode", "gpu_reason", "make_decoder"]
