"""The HTML report renders in headless Chromium: images decoded, histogram drawn, failures listed, nothing fetched.

Needs the Debian packages `chromium` and `chromium-driver` (installed by scripts/setup.sh); skipped when they are
absent, except under IMGPREF_REQUIRE_ALL=1 (scripts/test.sh, CI), where that skip fails (tests/conftest.py). Screenshots are saved under the test's tmp dir (report.png, compare.png).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from imgpref.eval.compare import compare_scores
from imgpref.eval.report import write_report

pytestmark = pytest.mark.browser


def _find(preferred: str, *names: str) -> str | None:
    if os.path.exists(preferred):
        return preferred
    return next((p for p in map(shutil.which, names) if p), None)


CHROMIUM = _find("/usr/bin/chromium", "chromium", "chromium-browser")
CHROMEDRIVER = _find("/usr/bin/chromedriver", "chromedriver")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("headless Chromium not installed: needs /usr/bin/chromium and /usr/bin/chromedriver "
                    "(Debian packages chromium, chromium-driver; scripts/setup.sh installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
                "--window-size=1280,1000"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


_PROBE = """
const imgs = [...document.images];
const failures = [...document.querySelectorAll('#failures-table tbody tr')].map(tr => tr.innerText);
const hist = [...document.querySelectorAll('svg.histogram')].map(s => ({
    bars: s.querySelectorAll('rect.bar').length, width: s.getBoundingClientRect().width,
    height: s.getBoundingClientRect().height}));
return {
  state: document.readyState,
  n_img: imgs.length,
  n_ok: imgs.filter(i => i.complete && i.naturalWidth > 0 && i.naturalHeight > 0).length,
  n_visible: imgs.filter(i => i.getBoundingClientRect().width > 20 && i.getBoundingClientRect().height > 20).length,
  hist: hist,
  failures: failures,
  prompts: [...document.querySelectorAll('.prompt')].map(p => p.textContent),
  scripts: document.scripts.length,
  external: performance.getEntriesByType('resource').map(e => e.name).filter(n => !n.startsWith('data:')),
  title: document.title,
  height: document.documentElement.scrollHeight,
};
"""


def _load(driver, html_path: Path) -> dict:
    driver.get(html_path.resolve().as_uri())
    # Images are data URIs: once the load event fired they are decoded, but wait explicitly to be safe.
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 30).until(
        lambda d: d.execute_script("return document.readyState === 'complete' && "
                                   "[...document.images].every(i => i.complete)"))
    return driver.execute_script(_PROBE)


def _screenshot(driver, out: Path, height: int) -> np.ndarray:
    driver.set_window_size(1280, min(max(int(height) + 140, 600), 8000))
    assert driver.save_screenshot(str(out))
    shot = np.asarray(Image.open(out).convert("RGB"))
    # Non-trivial: many distinct colours (photos), not a blank or single-colour page.
    assert shot.shape[0] >= 500 and shot.shape[1] >= 1000
    packed = (shot[..., 0].astype(np.int64) << 16) | (shot[..., 1].astype(np.int64) << 8) | shot[..., 2]
    assert len(np.unique(packed)) > 1000
    assert shot.std() > 20
    return shot


def test_score_report_renders_in_chromium(browser, scored, tmp_path):
    out = write_report(scored["df"], tmp_path / "report.html", title="browser test",
                       higher_is_better=scored["directions"])
    probe = _load(browser, out)
    assert probe["state"] == "complete" and probe["title"] == "browser test"
    assert probe["n_img"] == 10 and probe["n_ok"] == 10 and probe["n_visible"] == 10
    assert len(probe["hist"]) == 2
    for h in probe["hist"]:
        assert h["bars"] >= 2 and h["width"] > 300 and h["height"] > 100
    assert len(probe["failures"]) == 1
    assert scored["bad_name"] in probe["failures"][0] and scored["bad_reason"] in probe["failures"][0]
    # The hostile prompt is shown as text, never run as a script.
    assert probe["scripts"] == 0 and scored["xss_prompt"] in probe["prompts"]
    assert probe["external"] == []
    _screenshot(browser, tmp_path / "report.png", probe["height"])


def test_compare_report_renders_in_chromium(browser, image_writer, tmp_path):
    a = image_writer(tmp_path / "A", names=("astronaut", "chelsea", "coffee"))
    b = image_writer(tmp_path / "B", names=("astronaut", "chelsea", "coffee", "rocket"), scale=0.3)
    rows_a = [{"path": str(p), "scorer": "q", "score": float(i), "prompt": f"a photo of {n}", "error": None}
              for i, (n, p) in enumerate(a.items())]
    rows_b = [{"path": str(p), "scorer": "q", "score": 1.0, "prompt": f"a photo of {n}", "error": None}
              for n, p in b.items()]
    cmp = compare_scores(pd.DataFrame(rows_a), pd.DataFrame(rows_b), tmp_path / "A", tmp_path / "B", n_boot=200)
    out = write_report(None, tmp_path / "compare.html", compare=cmp)
    probe = _load(browser, out)
    assert probe["n_img"] == 6 and probe["n_ok"] == 6 and probe["n_visible"] == 6  # 3 matched x (A, B)
    assert len(probe["hist"]) == 1 and probe["hist"][0]["bars"] >= 2
    winrate = browser.execute_script(
        "return [...document.querySelectorAll('table.winrates tbody tr')].map(tr => tr.innerText)")
    assert len(winrate) == 1 and "0.5" in winrate[0]  # A: 0, 1, 2 vs B: 1, 1, 1 -> one win, one tie, one loss
    unmatched = browser.execute_script("return document.querySelector('details.unmatched').textContent")
    assert "rocket.jpg" in unmatched
    assert probe["external"] == []
    _screenshot(browser, tmp_path / "compare.png", probe["height"])
