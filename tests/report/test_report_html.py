"""The HTML report: self-contained, escaped, sorted by each scorer's direction, capped, with correct numbers."""
from __future__ import annotations

import base64
import html
import io
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from imgpref.eval.report import make_thumbnail, write_report



def _sections(page: str) -> dict[str, str]:
    """Scorer name -> that scorer's section HTML."""
    out = {}
    for m in re.finditer(r'<section class="scorer" id="[^"]+"><h2>([^<]*)</h2>(.*?)</section>', page, re.S):
        out[html.unescape(m.group(1))] = m.group(2)
    return out


def _names(section: str) -> list[str]:
    return [html.unescape(n) for n in re.findall(r'<div class="name" title="[^"]*">([^<]*)</div>', section)]


def _imgs(page: str) -> list[str]:
    return re.findall(r'<img src="([^"]*)"', page)


def test_report_is_self_contained_with_thumbnails_of_the_right_size(scored, tmp_path):
    out = write_report(scored["df"], tmp_path / "r.html", thumb_size=64, higher_is_better=scored["directions"])
    page = out.read_text(encoding="utf-8")
    imgs = re.findall(r'<img src="([^"]*)" alt="([^"]*)">', page)
    assert len(imgs) == 10  # 5 good images x 2 scorers; the broken file has no thumbnail
    for src, alt in imgs:
        assert src.startswith("data:image/jpeg;base64,")
        im = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        assert im.format == "JPEG" and max(im.size) == 64
        # Aspect kept (to rounding) against the original file.
        w, h = Image.open(scored["folder"] / html.unescape(alt)).size
        short = min(im.size)
        assert abs(short - 64 * min(w, h) / max(w, h)) <= 1, alt  # JPEG draft decoding may round by a pixel
        assert (im.width >= im.height) == (w >= h), alt
    # Nothing is fetched from outside the file.
    low = page.lower()
    for needle in ("http://", "https://", "<link", "<script", "src=\"file:", "url("):
        assert needle not in low, needle
    assert not list(tmp_path.glob("*.part"))


def test_grids_are_sorted_best_first_by_direction(scored, tmp_path):
    out = write_report(scored["df"], tmp_path / "r.html", higher_is_better=scored["directions"])
    sec = _sections(out.read_text(encoding="utf-8"))
    rel = {"astronaut": "astronaut.png", "chelsea": "cats/chelsea.jpg", "coffee": "coffee.jpg",
           "camera": "camera.png", "rocket": "rocket.jpg"}
    want_sharp = [rel[n] for n in sorted(scored["sharp"], key=lambda n: -scored["sharp"][n])]
    want_noise = [rel[n] for n in sorted(scored["noise"], key=lambda n: scored["noise"][n])]  # lower is better
    assert _names(sec["sharpness"]) == want_sharp == ["astronaut.png", "camera.png", "coffee.jpg", "rocket.jpg",
                                                      "cats/chelsea.jpg"]
    assert _names(sec["noise"]) == want_noise
    assert "lowest score first" in sec["noise"] and "highest score first" in sec["sharpness"]


def test_known_presets_get_their_direction_without_a_mapping(scored, tmp_path):
    from imgpref.scorers.registry import get_preset

    assert get_preset("noise").info.higher_is_better is False  # what the report must pick up by itself
    sec = _sections(write_report(scored["df"], tmp_path / "r.html").read_text(encoding="utf-8"))
    assert "lowest score first" in sec["noise"]


def test_user_text_is_escaped(scored, tmp_path):
    out = write_report(scored["df"], tmp_path / "r.html", title="<b>run</b> & co")
    page = out.read_text(encoding="utf-8")
    assert "<script>" not in page and "<b>run</b>" not in page and "<file>" not in page
    assert html.escape(scored["xss_prompt"], quote=True) in page
    assert "&lt;b&gt;run&lt;/b&gt; &amp; co" in page
    assert html.escape(scored["bad_name"]) in page


def test_summary_numbers_and_failures_table(scored, tmp_path):
    page = write_report(scored["df"], tmp_path / "r.html", higher_is_better=scored["directions"]).read_text("utf-8")
    summary = re.search(r'<table class="summary">(.*?)</table>', page, re.S).group(1)
    rows = {}
    for tr in re.findall(r"<tr>(.*?)</tr>", summary, re.S)[1:]:
        cells = [html.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", tr)]
        rows[cells[0]] = cells[1:]
    # by hand: 6 files, 5 scored, 1 failed; sharpness 1..5 -> mean 3, median 3, population sd sqrt(2), min 1,
    # max 5, shown with 4 significant digits
    assert rows["sharpness"][1:] == ["6", "5", "1", "3", "3", "1.414", "1", "5"]
    v = np.array(list(scored["noise"].values()), dtype=np.float64)
    stats = (v.mean(), np.median(v), v.std(), v.min(), v.max())
    assert rows["noise"][1:] == ["6", "5", "1"] + [f"{x:.4g}" for x in stats]
    assert rows["noise"][0] == "lower" and rows["sharpness"][0] == "higher"

    table = re.search(r'<table class="failures" id="failures-table">(.*?)</table>', page, re.S).group(1)
    body = re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>")[1], re.S)
    assert len(body) == 1  # one file, failed for both scorers: listed once
    cells = [html.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", body[0])]
    assert cells == [scored["bad_name"], "noise, sharpness", scored["bad_reason"]]


def test_histogram_counts_every_scored_image(scored, tmp_path):
    page = write_report(scored["df"], tmp_path / "r.html").read_text("utf-8")
    for name, sec in _sections(page).items():
        svg = re.search(r'<svg class="histogram".*?</svg>', sec, re.S).group(0)
        counts = [int(c) for c in re.findall(r"<title>[^<:]*: (\d+) in \[", svg)]
        assert sum(counts) == 5, name
        assert len(re.findall(r'<rect class="bar"', svg)) == len(counts)


def test_large_runs_show_best_and_worst_only(scored, tmp_path):
    page = write_report(scored["df"], tmp_path / "r.html", max_images=3,
                        higher_is_better=scored["directions"]).read_text("utf-8")
    assert len(_imgs(page)) == 6
    sec = _sections(page)["sharpness"]
    assert _names(sec) == ["astronaut.png", "camera.png", "cats/chelsea.jpg"]  # best 2, worst 1
    assert re.findall(r'class="rank">#(\d+)<', sec) == ["1", "2", "5"]
    assert "Showing 3 of 5 scored images" in sec and "2 images with middle scores not shown" in sec


def test_many_images_keep_the_file_small(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(30):
        p = tmp_path / f"n{i:02d}.png"
        Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    df = pd.DataFrame({"path": paths, "scorer": "s", "score": rng.normal(size=30)})
    small = write_report(df, tmp_path / "small.html", max_images=10, thumb_size=96).stat().st_size
    full = write_report(df, tmp_path / "full.html", max_images=30, thumb_size=96).stat().st_size
    assert len(_imgs((tmp_path / "small.html").read_text("utf-8"))) == 10
    assert small < 0.4 * full


def test_unreadable_or_missing_image_gets_a_placeholder(tmp_path):
    df = pd.DataFrame({"path": [str(tmp_path / "gone.png")], "scorer": ["s"], "score": [1.0]})
    page = write_report(df, tmp_path / "r.html").read_text("utf-8")
    assert "no preview" in page and not _imgs(page)
    assert 'id="no-failures"' in page


def test_bad_arguments_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="missing column.*'score'"):
        write_report(pd.DataFrame({"path": ["a"], "scorer": ["s"]}), tmp_path / "r.html")
    with pytest.raises(ValueError, match="thumb_size"):
        write_report(pd.DataFrame({"path": [], "scorer": [], "score": []}), tmp_path / "r.html", thumb_size=4)
    with pytest.raises(ValueError, match="results table"):
        write_report(None, tmp_path / "r.html")


def _thumb(path, size=256) -> Image.Image:
    data = make_thumbnail(path, size)
    assert data is not None
    return Image.open(io.BytesIO(data)).convert("RGB")


def test_thumbnails_of_awkward_modes(tmp_path):
    # 16-bit grey at full scale -> white, not clipped garbage.
    p16 = tmp_path / "g16.png"
    Image.fromarray(np.full((20, 30), 65535, dtype=np.uint16)).save(p16)
    assert np.asarray(_thumb(p16)).min() >= 250
    # Fully transparent RGBA -> composited on white.
    pa = tmp_path / "rgba.png"
    Image.new("RGBA", (30, 20), (255, 0, 0, 0)).save(pa)
    assert np.asarray(_thumb(pa)).min() >= 250
    # EXIF orientation 6 (rotate 90 deg): a 40x20 file is shown 20x40.
    pe = tmp_path / "rot.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (40, 20), (0, 128, 0)).save(pe, exif=exif)
    assert _thumb(pe).size == (20, 40)
    # CMYK JPEG -> RGB.
    pc = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(pc)  # pure red in CMYK
    r, g, b = np.asarray(_thumb(pc)).reshape(-1, 3).mean(axis=0)
    assert r > 200 and g < 60 and b < 60
    # Large JPEG: longest side is the thumbnail size.
    pl = tmp_path / "big.jpg"
    Image.new("RGB", (1600, 900), (10, 20, 30)).save(pl)
    w, h = _thumb(pl, 100).size
    assert w == 100 and abs(h - 100 * 900 / 1600) <= 1  # JPEG draft decoding may round by a pixel
    # Zero bytes -> None (the report shows a placeholder).
    pz = tmp_path / "z.png"
    pz.write_bytes(b"")
    assert make_thumbnail(pz) is None
