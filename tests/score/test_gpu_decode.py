"""`--decode gpu`: the tensor decode stage (`imgpref.scorers.gpu_decode`), run here on the CPU with torchvision's
CPU JPEG decoder (same code path as on CUDA except the decoder), against the PIL path as the reference."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from imgpref.data.sample_shards import bad_bytes, jpeg_bytes
from imgpref.data.sources import write_tar_shard
from imgpref.scorers import gpu_decode
from imgpref.scorers.score_dataset import score_dataset
from imgpref.scorers.tiny_scorers import tiny_clip_scorers

# Measured on this dataset (tiny CLIP, random weights; the two scores span about -0.6..0.9): model inputs differ
# by at most 1.000 grey level (rare pixels where PIL's fixed-point resize rounds the other way), scores by at
# most 3.0e-4. (One float resize pass instead of PIL's two rounded passes gave 2.4 levels and 2.2e-3.)
INPUT_TOL_LEVELS = 1.01
SCORE_TOL = 1e-3


def _jpeg(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=90, **kw)
    return buf.getvalue()


def _rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    return _jpeg(Image.open(io.BytesIO(jpeg_bytes(7, (60, 40)))), exif=exif.tobytes())


def _png() -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(jpeg_bytes(8, (50, 30)))).save(buf, format="PNG")
    return buf.getvalue()


# key -> (bytes, goes to the tensor path)
SAMPLES = {
    "rgb_wide": (jpeg_bytes(1, (96, 64)), True),
    "rgb_tall": (jpeg_bytes(2, (48, 80)), True),
    "rgb_same_size": (jpeg_bytes(3, (96, 64)), True),  # stacked with rgb_wide
    "rgb_small": (jpeg_bytes(4, (20, 24)), True),  # upsampled to the model size
    "grey": (_jpeg(Image.open(io.BytesIO(jpeg_bytes(5, (64, 64)))).convert("L")), True),
    "cmyk": (_jpeg(Image.open(io.BytesIO(jpeg_bytes(6, (64, 48)))).convert("CMYK")), False),
    "rotated": (_rotated(), False),
    "png": (_png(), False),
    "truncated": (bad_bytes("truncated"), False),
    "text": (bad_bytes("text"), False),
    "empty": (bad_bytes("empty"), False),
}


@pytest.fixture(scope="module")
def shard(tmp_path_factory):
    path = tmp_path_factory.mktemp("gpu") / "00000.tar"
    return str(write_tar_shard(path, ((k, {"jpg": b, "txt": f"photo {k}".encode()}) for k, (b, _) in SAMPLES.items())))


def test_header_check_sends_only_plain_jpegs_to_the_tensor_path():
    for key, (data, tensor_path) in SAMPLES.items():
        assert (gpu_decode.gpu_reason(data, 89_478_485) is None) == tensor_path, key
    assert gpu_decode.gpu_reason(jpeg_bytes(1, (96, 64)), max_pixels=1000) == "over max_pixels"


def test_tensor_decode_matches_the_pil_path(shard, monkeypatch, tmp_path):
    """The full local engine with decode="gpu" run on the CPU (the CUDA checks bypassed) against decode="cpu":
    the same errors for the same files, identical scores for the CPU fallbacks, scores within SCORE_TOL for the
    JPEGs the tensor path decoded, and model inputs within INPUT_TOL_LEVELS grey levels."""
    scorers = tiny_clip_scorers(cosine=False)
    monkeypatch.setattr(gpu_decode, "check_gpu_decode", lambda device: None)
    cpu = score_dataset([shard], scorers, out=f"{tmp_path}/cpu.parquet", progress=False, device="cpu")
    gpu = score_dataset([shard], scorers, out=f"{tmp_path}/gpu.parquet", progress=False, device="cpu", decode="gpu")
    assert gpu.attrs["stats"]["decoded_gpu"] == sum(t for _, t in SAMPLES.values())
    a = cpu.set_index(["path", "scorer"]).sort_index()
    b = gpu.set_index(["path", "scorer"]).sort_index()
    assert list(a.index) == list(b.index) and len(a) == 2 * len(SAMPLES)
    assert a["error"].fillna("").tolist() == b["error"].fillna("").tolist()
    bad = {k for k in SAMPLES if isinstance(a.loc[(f"{shard}::{k}", "lin1"), "error"], str)}
    assert bad == {"truncated", "text", "empty"}
    for (path, _), va, vb in zip(a.index, a["score"], b["score"]):
        key = path.rsplit("::", 1)[1]
        if key in bad:
            assert np.isnan(va) and np.isnan(vb)
        elif SAMPLES[key][1]:
            assert abs(va - vb) <= SCORE_TOL, (key, va, vb)
        else:
            assert va == vb, key  # decoded by the same CPU path


def test_tensor_inputs_within_a_grey_level_of_pil(shard):
    from imgpref.data.sources import open_sources
    from imgpref.scorers.score_paths import _groups
    from imgpref.scorers.stages import build_spec, plan_shard

    scorers = tiny_clip_scorers(cosine=False)
    spec = build_spec(scorers, _groups(scorers, None, torch.device("cpu"), False))
    batch = next(plan_shard(open_sources([shard])[0], spec, None, 64))
    cpu = gpu_decode.make_decoder("cpu", spec, scorers, torch.device("cpu"))
    ten = gpu_decode.make_decoder("gpu", spec, scorers, torch.device("cpu"), check=False)
    xa, xb = torch.as_tensor(cpu(dict(batch))["x0"]), ten(dict(batch))["x0"]
    std = torch.tensor(scorers[0].backbone.std).view(1, 3, 1, 1)
    levels = ((xa - xb).abs() * std * 255).amax(dim=(1, 2, 3))  # back to 0..255 pixel units
    assert float(levels.max()) <= INPUT_TOL_LEVELS
    assert ten.counts == {"gpu": 5, "cpu": 6}  # cmyk, rotated, png and the three bad files: the CPU path


def test_decode_gpu_without_cuda_is_a_clear_error(shard, monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    scorers = tiny_clip_scorers(n_linear=1, cosine=False)
    with pytest.raises(ValueError, match="--decode gpu needs a CUDA device"):
        score_dataset([shard], scorers, out=f"{tmp_path}/o.parquet", progress=False, decode="gpu")
    with pytest.raises(ValueError, match="--decode 'tpu'"):
        score_dataset([shard], scorers, out=f"{tmp_path}/o.parquet", progress=False, decode="tpu")
    assert not (tmp_path / "o.parquet").exists()

    from imgpref.cli import app

    res = CliRunner().invoke(app, ["score", shard, "-s", "contrast", "--out", f"{tmp_path}/c.csv", "--decode", "gpu"])
    assert res.exit_code == 2 and "CUDA" in res.output and not (tmp_path / "c.csv").exists()
