"""Robust loading: every awkward input kind is loaded correctly (upright RGB) or refused with its reason."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from imgpref.data.images import ImageLoadError, load_image


@pytest.fixture
def odd(odd_folder):
    return odd_folder


def test_every_bad_kind_has_its_reason(odd):
    folder, expect = odd
    for name, err in expect.items():
        if err is None:
            continue
        with pytest.raises(ImageLoadError) as info:
            load_image(folder / name)
        assert err.lower() in info.value.reason.lower(), (name, info.value.reason)


def test_odd_but_valid_kinds_are_loaded_correctly(odd):
    folder, expect = odd
    for name, err in expect.items():
        if err is None:
            im = load_image(folder / name)
            assert im.mode == "RGB", name
    # CMYK: what PIL's own CMYK->RGB conversion gives
    with Image.open(folder / "cmyk.jpg") as raw:
        assert raw.mode == "CMYK"
        np.testing.assert_array_equal(np.asarray(load_image(folder / "cmyk.jpg")), np.asarray(raw.convert("RGB")))
    # 16-bit: k * 257 rescales to exactly k (PIL's own convert would clip everything above 255 to white)
    arr = np.asarray(load_image(folder / "sixteen.png"))
    want = (np.arange(48 * 32).reshape(32, 48) % 256).astype(np.uint8)
    np.testing.assert_array_equal(arr[..., 0], want)
    np.testing.assert_array_equal(arr[..., 2], want)
    # palette + transparency: the transparent (red) right half becomes the white background, the left stays blue
    pal = np.asarray(load_image(folder / "palette_alpha.png"))
    assert (pal[:, 16:] == 255).all() and (pal[:, :16] == [0, 0, 255]).all()
    # LA with alpha 128 over white: round((l * 128 + 255 * 127) / 255)
    with Image.open(folder / "gray.png") as g:
        lum = np.asarray(g, dtype=np.float64)
    la = np.asarray(load_image(folder / "gray_alpha.png"))[..., 0].astype(np.float64)
    assert np.abs(la - (lum * 128 + 255 * 127) / 255).max() <= 1.0
    # EXIF orientation 6: the stored 48x32 image is shown (and scored) rotated clockwise, 32x48
    up = load_image(folder / "rotated.jpg")
    with Image.open(folder / "rotated.jpg") as raw:
        assert raw.size == (48, 32)
        np.testing.assert_array_equal(np.asarray(up), np.asarray(raw.convert("RGB").transpose(Image.ROTATE_270)))
    # animated: first frame
    for name in ("anim.gif", "anim.webp"):
        if name in expect:
            px = np.asarray(load_image(folder / name)).reshape(-1, 3).mean(0)
            assert px[0] > 150 and px[1] < 80, (name, px)


def test_draft_decoding_keeps_twice_the_target(tmp_path):
    rng = np.random.default_rng(0)
    small = Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).resize((1024, 768), Image.BICUBIC)
    small.save(tmp_path / "big.jpg", quality=90)
    full = load_image(tmp_path / "big.jpg")
    drafted = load_image(tmp_path / "big.jpg", draft_size=448)
    assert full.size == (1024, 768)
    assert drafted.size == (1024, 768)  # 768 / 2 < 448: no reduction allowed
    assert load_image(tmp_path / "big.jpg", draft_size=300).size == (512, 384)
    assert load_image(tmp_path / "big.jpg", draft_size=100).size == (256, 192)  # largest scale keeping >= 100
    drafted = load_image(tmp_path / "big.jpg", draft_size=300)
    # quality: both resized to 224 agree closely
    a = np.asarray(full.resize((224, 168), Image.BICUBIC), dtype=np.float64)
    b = np.asarray(drafted.resize((224, 168), Image.BICUBIC), dtype=np.float64)  # 2x reduction, like 448 for 224
    assert np.abs(a - b).mean() < 2.0


def test_max_pixels_override(tmp_path):
    Image.new("RGB", (100, 100)).save(tmp_path / "x.png")
    with pytest.raises(ImageLoadError, match="exceeds the limit of 5000"):
        load_image(tmp_path / "x.png", max_pixels=5000)
    assert load_image(tmp_path / "x.png", max_pixels=None).size == (100, 100)
