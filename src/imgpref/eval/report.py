"""One self-contained HTML report for a scoring run (`imgpref score --report`) or a comparison (`imgpref compare`).

The file makes no external request: CSS is inline, thumbnails are base64 JPEG data URIs made with PIL, histograms
are inline SVG. Every user-supplied string (paths, prompts, scorer names, error messages) is HTML-escaped.

Size is bounded: each scorer's grid shows at most `max_images` thumbnails (the best half and the worst half when
there are more, with a note saying how many were left out), and the comparison table at most `max_images` rows.
With the defaults (256 px thumbnails at JPEG quality 80, roughly 10-20 kB each) a report stays in the megabytes
however large the run.
"""
from __future__ import annotations

import base64
import io
import os
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from PIL import Image, ImageOps

from imgpref.eval.report_charts import ci_bar_svg, histogram_svg
from imgpref.eval.report_charts import esc as _esc
from imgpref.eval.report_charts import fmt_num as _fmt
from imgpref.atomic import atomic_write

if TYPE_CHECKING:  # compare imports nothing from here, but keep the import one-way at runtime too
    from imgpref.eval.compare import CompareResult

DEFAULT_TITLE = "imgpref report"
DEFAULT_MAX_IMAGES = 120
REQUIRED_COLUMNS = ("path", "scorer", "score")
JPEG_QUALITY = 80


def _text(value: object) -> str:
    """A cell value as text, with NaN/None as the empty string."""
    if value is None or (not isinstance(value, str) and pd.api.types.is_scalar(value) and pd.isna(value)):
        return ""  # None, NaN, pd.NA, NaT: an absent value
    return str(value)


def _slug(name: str, i: int) -> str:
    return f"s{i}-" + re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-")[:40]


def preset_directions(names: Sequence[str], known: Mapping[str, bool] | None = None) -> dict[str, bool]:
    """`higher_is_better` of the registered presets among `names` (e.g. `noise` is lower-is-better).

    Looks at preset metadata only (no weights are loaded). Names that are not presets (scorer folders, trained
    scorers) and names in `known` are left out.
    """
    out: dict[str, bool] = {}
    names = [str(n) for n in names if known is None or n not in known]
    if not names:
        return out  # the registry import is slow (it pulls in the backbones); skip it when nothing is unknown
    try:
        from imgpref.scorers.registry import get_preset
    except ImportError:
        return out
    for n in names:
        try:
            hib = get_preset(n).info.higher_is_better
        except Exception:  # noqa: BLE001 - not a preset name: its direction stays unknown
            continue
        if isinstance(hib, bool):
            out[str(n)] = hib
    return out


# thumbnails -----------------------------------------------------------------------------------------------------
def _to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB for display: 16-bit and float images rescaled, transparency composited on white."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        if im.mode == "F":
            top = max(float(arr.max(initial=0)), 1e-12)
        im = Image.fromarray(np.clip(arr / top * 255.0, 0, 255).astype(np.uint8), mode="L")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return im.convert("RGB")


def make_thumbnail(path: str | Path, size: int = 256) -> bytes | None:
    """JPEG bytes of `path` shown upright with its longest side at most `size`; None if it cannot be read."""
    try:
        with Image.open(path) as im:
            # Decode JPEGs at a reduced scale (exact enough for a thumbnail, and much faster for big photos).
            im.draft(None, (size, size))
            im = ImageOps.exif_transpose(im)
            im = _to_rgb(im)
            im.thumbnail((size, size), Image.Resampling.LANCZOS)
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=True)
            return buf.getvalue()
    except Exception:  # noqa: BLE001 - any unreadable file gets a placeholder; its reason is in the failures table
        return None


class _Thumbs:
    """Thumbnail data URIs, made once per path."""

    def __init__(self, size: int):
        self.size = size
        self._cache: dict[str, str | None] = {}

    def uri(self, path: str) -> str | None:
        if path not in self._cache:
            data = make_thumbnail(path, self.size)
            self._cache[path] = None if data is None else "data:image/jpeg;base64," + base64.b64encode(data).decode()
        return self._cache[path]

    def img(self, path: str, label: str) -> str:
        uri = self.uri(path)
        if uri is None:
            return '<div class="noimg">no preview</div>'
        return f'<img src="{uri}" alt="{_esc(label)}">'


# sections ------------------------------------------------------------------------------------------------------
def _display_root(paths: list[str]) -> str | None:
    """Common folder of all paths, so the report shows short relative names."""
    dirs = {os.path.dirname(os.path.abspath(p)) for p in paths}
    if not dirs:
        return None
    try:
        return os.path.commonpath(sorted(dirs))
    except ValueError:  # different drives on Windows
        return None


def _short(path: str, root: str | None) -> str:
    if root is None:
        return path
    rel = os.path.relpath(os.path.abspath(path), root)
    return path if rel.startswith("..") else rel.replace(os.sep, "/")


def _failed(df: pd.DataFrame) -> pd.Series:
    err = df["error"].map(_text).str.len() > 0
    return err | ~np.isfinite(df["score"].to_numpy(dtype=np.float64))


def _summary_table(df: pd.DataFrame, scorers: list[str], directions: Mapping[str, bool], side_col: str | None) -> str:
    rows = []
    groups: list[tuple[str, str, pd.DataFrame]] = []
    for name in scorers:
        sub = df[df["scorer"] == name]
        if side_col is None:
            groups.append((name, "", sub))
        else:
            for side in ("A", "B"):
                groups.append((name, side, sub[sub[side_col] == side]))
    for name, side, sub in groups:
        ok = sub.loc[~_failed(sub), "score"].to_numpy(dtype=np.float64)
        direction = "higher" if directions.get(name, True) else "lower"
        if name not in directions:
            direction += " (assumed)"
        rows.append(
            "<tr>"
            + f"<td>{_esc(name)}</td>"
            + (f"<td>{side}</td>" if side_col else "")
            + f"<td>{direction}</td><td class=num>{len(sub)}</td><td class=num>{ok.size}</td>"
            + f"<td class=num>{len(sub) - ok.size}</td>"
            + "".join(
                f"<td class=num>{_fmt(f(ok)) if ok.size else '—'}</td>"
                for f in (np.mean, np.median, lambda a: np.std(a), np.min, np.max)
            )
            + "</tr>"
        )
    head = (
        "<tr><th>scorer</th>"
        + ("<th>folder</th>" if side_col else "")
        + "<th>better</th><th>images</th><th>scored</th><th>failed</th>"
        + "<th>mean</th><th>median</th><th>std</th><th>min</th><th>max</th></tr>"
    )
    return f'<table class="summary"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'


def _grid(sub: pd.DataFrame, higher: bool, max_images: int, thumbs: _Thumbs, root: str | None) -> str:
    ok = sub[~_failed(sub)].copy()
    ok["_s"] = ok["score"].astype(np.float64)
    # Stable sort on the path first so equal scores keep a reproducible order.
    ok = ok.sort_values("path", kind="stable").sort_values("_s", ascending=not higher, kind="stable")
    n = len(ok)
    if n == 0:
        return '<p class="muted">no image was scored</p>'
    if n > max_images:
        n_top = (max_images + 1) // 2
        shown = [(i, ok.iloc[i]) for i in range(n_top)] + [None] + [
            (i, ok.iloc[i]) for i in range(n - (max_images - n_top), n)
        ]
    else:
        shown = [(i, ok.iloc[i]) for i in range(n)]
    cards = []
    for item in shown:
        if item is None:
            cards.append(
                f'<div class="gap">… {n - max_images} images with middle scores not shown '
                f"(best {(max_images + 1) // 2} and worst {max_images - (max_images + 1) // 2} of {n}) …</div>"
            )
            continue
        rank, row = item
        name = _short(str(row["path"]), root)
        prompt = _text(row.get("prompt"))
        cards.append(
            '<figure class="card">'
            + thumbs.img(str(row["path"]), name)
            + "<figcaption>"
            + f'<div class="meta"><span class="rank">#{rank + 1}</span><span class="score">{_fmt(row["_s"])}</span></div>'
            + f'<div class="name" title="{_esc(row["path"])}">{_esc(name)}</div>'
            + (f'<div class="prompt" title="{_esc(prompt)}">{_esc(prompt)}</div>' if prompt else "")
            + "</figcaption></figure>"
        )
    note = ""
    if n > max_images:
        note = f'<p class="note">Showing {max_images} of {n} scored images: the best and the worst by score.</p>'
    return note + '<div class="grid">' + "".join(cards) + "</div>"


def _failures_table(df: pd.DataFrame, root: str | None) -> str:
    bad = df[_failed(df)]
    if bad.empty:
        return '<p class="muted" id="no-failures">No failures: every image was scored.</p>'
    reasons: dict[tuple[str, str, str], list[str]] = {}
    for row in bad.to_dict("records"):  # plain dicts: a Series row would re-infer Arrow strings (non-UTF-8 names)
        reason = _text(row["error"]) or "no score returned"
        side = _text(row.get("side")) if "side" in bad.columns else ""
        reasons.setdefault((side, str(row["path"]), reason), []).append(str(row["scorer"]))
    with_side = "side" in bad.columns
    body = "".join(
        "<tr>"
        + (f"<td>{_esc(side)}</td>" if with_side else "")
        + f'<td class="path" title="{_esc(path)}">{_esc(_short(path, root))}</td>'
        + f"<td>{_esc(', '.join(sorted(set(names))))}</td><td class=reason>{_esc(reason)}</td></tr>"
        for (side, path, reason), names in sorted(reasons.items())
    )
    head = ("<th>folder</th>" if with_side else "") + "<th>path</th><th>scorers</th><th>reason</th>"
    n_files = len({(s, p) for s, p, _ in reasons})
    return (
        f'<p>{n_files} file(s) could not be scored.</p>'
        f'<table class="failures" id="failures-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    )


def _compare_sections(cmp: "CompareResult") -> str:
    out = ['<section id="compare"><h2>A vs B</h2>']
    out.append(
        '<table class="kv">'
        f"<tr><th>A</th><td>{_esc(cmp.dir_a)}</td></tr><tr><th>B</th><td>{_esc(cmp.dir_b)}</td></tr>"
        f"<tr><th>matched images</th><td>{cmp.n_matched}</td></tr>"
        f"<tr><th>only in A</th><td>{len(cmp.only_a)}</td></tr><tr><th>only in B</th><td>{len(cmp.only_b)}</td></tr>"
        "</table>"
    )
    rows = []
    for _, r in cmp.win_rates.iterrows():
        rows.append(
            f"<tr><td>{_esc(r['scorer'])}</td><td>{'higher' if r['higher_is_better'] else 'lower'}</td>"
            f"<td class=num>{int(r['n'])}</td><td class=num>{int(r['wins_a'])}</td><td class=num>{int(r['ties'])}</td>"
            f"<td class=num>{int(r['wins_b'])}</td>"
            f"<td class='num winrate'>{_fmt(r['win_rate'])}</td>"
            f"<td class=num>[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]</td>"
            f"<td>{ci_bar_svg(float(r['win_rate']), float(r['ci_low']), float(r['ci_high']))}</td>"
            f"<td class=num>{_fmt(r['mean_a'])}</td><td class=num>{_fmt(r['mean_b'])}</td></tr>"
        )
    out.append(
        "<h3>Win rate of A over B</h3>"
        '<p class="note">Per matched image, A wins when its score is better (by the scorer\'s direction); '
        "ties count half. 95% interval: percentile bootstrap over images.</p>"
        '<table class="winrates"><thead><tr><th>scorer</th><th>better</th><th>pairs</th><th>A wins</th>'
        "<th>ties</th><th>B wins</th><th>win rate A</th><th>95% CI</th><th>0 · 0.5 · 1</th><th>mean A</th>"
        f'<th>mean B</th></tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )
    for label, items in (("only in A", cmp.only_a), ("only in B", cmp.only_b)):
        if items:
            lis = "".join(f"<li>{_esc(x)}</li>" for x in items[:1000])
            more = f"<li>… and {len(items) - 1000} more</li>" if len(items) > 1000 else ""
            out.append(
                f'<details class="unmatched"><summary>{len(items)} image(s) {label}, not compared</summary>'
                f"<ul>{lis}{more}</ul></details>"
            )
    out.append("</section>")
    return "".join(out)


def _side_by_side(cmp: "CompareResult", max_images: int, thumbs: _Thumbs) -> str:
    """One row per matched relative path: both thumbnails and, per scorer, the two scores (winner in bold)."""
    out = ['<section id="side-by-side"><h2>Side by side</h2>']
    pi = cmp.per_image
    scorers = list(dict.fromkeys(pi["scorer"]))
    rels = sorted(dict.fromkeys(pi["rel_path"]))
    n_rel = len(rels)
    rels = rels[:max_images]
    by_key = {(r.rel_path, r.scorer): r for r in pi.itertuples(index=False)}
    head = "<th>image</th><th>A</th><th>B</th>" + "".join(f"<th>{_esc(s)}<br><small>A · B</small></th>" for s in scorers)
    body = []
    for rel in rels:
        first = next((by_key[(rel, s)] for s in scorers if (rel, s) in by_key), None)
        if first is None:
            continue
        prompt = _text(getattr(first, "prompt", ""))
        cells = []
        for s in scorers:
            r = by_key.get((rel, s))
            if r is None:
                cells.append("<td>—</td>")
                continue
            win = _text(r.winner)
            cls_a = ' class="win"' if win == "A" else ""
            cls_b = ' class="win"' if win == "B" else ""
            tie = ' <span class="tie">tie</span>' if win == "tie" else ""
            err = _text(getattr(r, "error", ""))
            cells.append(
                f'<td class="pair"><span{cls_a}>{_fmt(r.score_a)}</span> · <span{cls_b}>{_fmt(r.score_b)}</span>{tie}'
                + (f'<div class="reason">{_esc(err)}</div>' if err else "")
                + "</td>"
            )
        body.append(
            f'<tr><td class="path">{_esc(rel)}'
            + (f'<div class="prompt">{_esc(prompt)}</div>' if prompt else "")
            + "</td>"
            + f'<td class="thumb">{thumbs.img(str(first.path_a), "A: " + rel)}</td>'
            + f'<td class="thumb">{thumbs.img(str(first.path_b), "B: " + rel)}</td>'
            + "".join(cells)
            + "</tr>"
        )
    if n_rel > len(rels):
        out.append(f'<p class="note">Showing the first {len(rels)} of {n_rel} matched images (by path).</p>')
    out.append(f'<table class="sidebyside"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>')
    out.append("</section>")
    return "".join(out)


_CSS = """
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#1d2733;
background:#f3f5f7}
header{background:#1d2733;color:#fff;padding:18px 28px}
header h1{margin:0 0 4px;font-size:22px;font-weight:600}
header .sub{color:#b8c2cc;font-size:13px}
nav{padding:8px 28px;background:#fff;border-bottom:1px solid #e3e6ea;position:sticky;top:0;z-index:2}
nav a{margin-right:16px;color:#3b6fd8;text-decoration:none}
main{padding:8px 28px 40px;max-width:1500px}
section{background:#fff;border:1px solid #e3e6ea;border-radius:8px;padding:16px 20px;margin:18px 0}
h2{margin:0 0 10px;font-size:18px}
h3{margin:18px 0 8px;font-size:15px}
table{border-collapse:collapse;margin:6px 0}
th,td{padding:5px 10px;border-bottom:1px solid #eceff2;text-align:left;vertical-align:top}
th{background:#f7f8fa;font-weight:600;font-size:13px}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.muted{color:#8a9099}
.note{color:#5b6570;font-size:13px;margin:4px 0 8px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(176px,1fr));gap:12px}
.card{margin:0;background:#fafbfc;border:1px solid #e3e6ea;border-radius:6px;overflow:hidden}
.card img,.card .noimg{display:block;width:100%;height:170px;object-fit:contain;background:#eef0f3}
.noimg{display:flex;align-items:center;justify-content:center;color:#8a9099;font-size:12px;height:120px}
figcaption{padding:6px 8px;font-size:12px}
.meta{display:flex;justify-content:space-between}
.rank{color:#8a9099}
.score{font-weight:600;font-variant-numeric:tabular-nums}
.name,.path{word-break:break-all}
.prompt{color:#5b6570;font-style:italic;overflow:hidden;display:-webkit-box;-webkit-line-clamp:3;-webkit-box-orient:vertical}
.gap{grid-column:1/-1;text-align:center;color:#8a9099;padding:8px;border:1px dashed #d5d9de;border-radius:6px}
.histogram .tick{font-size:11px;fill:#5b6570}
.failures .reason,.reason{color:#b3261e;font-size:12px}
.sidebyside td.thumb img,.sidebyside td.thumb .noimg{width:150px;height:150px;object-fit:contain;background:#eef0f3}
.pair{white-space:nowrap;font-variant-numeric:tabular-nums}
.win{font-weight:700;color:#17803d}
.tie{color:#8a9099;font-size:12px}
.winrate{font-weight:700}
.kv th{width:140px}
footer{color:#8a9099;font-size:12px;padding:0 28px 24px}
"""


def write_report(
    results: pd.DataFrame | None,
    out_html: str | Path,
    *,
    title: str = DEFAULT_TITLE,
    thumb_size: int = 256,
    max_images: int = DEFAULT_MAX_IMAGES,
    compare: "CompareResult | None" = None,
    higher_is_better: Mapping[str, bool] | None = None,
) -> Path:
    """Write one self-contained HTML report and return its path.

    `results`: the table of `score_paths` (columns path, scorer, score, and optionally prompt, error), one row per
    image and scorer; failures have a non-empty `error` or a NaN score. With `compare` (from `compare_folders`),
    `results` may be None: the comparison's own score table is used. `higher_is_better` maps scorer name ->
    direction for sorting (best first); scorers missing from it are assumed higher-is-better, and the report says
    so. `max_images` caps the thumbnails per scorer grid and the rows of the side-by-side table.
    """
    if thumb_size < 16:
        raise ValueError(f"thumb_size must be >= 16 pixels; got {thumb_size}")
    if max_images < 1:
        raise ValueError(f"max_images must be >= 1; got {max_images}")
    if results is None:
        if compare is None:
            raise ValueError("write_report needs a results table (from score_paths) or compare=CompareResult")
        results = compare.results
    missing = [c for c in REQUIRED_COLUMNS if c not in results.columns]
    if missing:
        raise ValueError(
            f"results is missing column(s) {missing}; expected the table of score_paths "
            f"(path, scorer, score, prompt, error), got columns {list(results.columns)}"
        )
    df = results.copy()
    for col in ("prompt", "error"):
        if col not in df.columns:
            df[col] = ""
    # object dtype: pandas' Arrow strings cannot hold surrogate-escaped (non-UTF-8) file names
    df["path"] = pd.Series([str(v) for v in df["path"]], index=df.index, dtype=object)
    df["scorer"] = pd.Series([str(v) for v in df["scorer"]], index=df.index, dtype=object)
    df["score"] = pd.to_numeric(df["score"], errors="coerce").astype("float64")  # nullable NA -> NaN

    directions: dict[str, bool] = {}
    # score_paths records each scorer's declared direction (presets and scorer folders alike) on its table
    directions.update({str(k): bool(v) for k, v in (results.attrs.get("higher_is_better") or {}).items()})
    if compare is not None:
        directions.update(compare.higher_is_better)
    if higher_is_better:
        directions.update({str(k): bool(v) for k, v in higher_is_better.items()})
    # Presets named in the table but not in the mapping: their declared direction (e.g. noise: lower is better).
    directions.update(preset_directions(list(dict.fromkeys(df["scorer"])), directions))

    scorers = list(dict.fromkeys(df["scorer"]))
    side_col = "side" if compare is not None and "side" in df.columns else None
    root = _display_root(list(df["path"].unique()))
    thumbs = _Thumbs(thumb_size)
    slugs = {name: _slug(name, i) for i, name in enumerate(scorers)}

    n_files = df["path"].nunique()
    n_bad_files = df.loc[_failed(df), "path"].nunique()
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sub = f"{n_files} image file(s) · {len(scorers)} scorer(s) · {n_bad_files} with failures · {stamp}"

    nav = ['<a href="#summary">Summary</a>']
    if compare is not None:
        nav.append('<a href="#compare">A vs B</a>')
    nav += [f'<a href="#{slugs[s]}">{_esc(s)}</a>' for s in scorers]
    if compare is not None:
        nav.append('<a href="#side-by-side">Side by side</a>')
    nav.append('<a href="#failures">Failures</a>')

    body = [f'<section id="summary"><h2>Summary</h2>{_summary_table(df, scorers, directions, side_col)}</section>']
    if compare is not None:
        body.append(_compare_sections(compare))
    for name in scorers:
        sd = df[df["scorer"] == name]
        higher = directions.get(name, True)
        assumed = "" if name in directions else " (direction unknown: assumed higher is better)"
        order = f"sorted best first: {'highest' if higher else 'lowest'} score first{assumed}"
        parts = [f'<section class="scorer" id="{slugs[name]}"><h2>{_esc(name)}</h2>']
        ok = sd[~_failed(sd)]
        if side_col:
            series = {side: ok.loc[ok[side_col] == side, "score"].to_numpy(np.float64) for side in ("A", "B")}
        else:
            series = {name: ok["score"].to_numpy(np.float64)}
        parts.append(f'<div class="hist">{histogram_svg(series, title=f"{name} scores")}</div>')
        if side_col is None:
            parts.append(f'<h3>Images, {_esc(order)}</h3>')
            parts.append(_grid(sd, higher, max_images, thumbs, root))
        parts.append("</section>")
        body.append("".join(parts))
    if compare is not None:
        body.append(_side_by_side(compare, max_images, thumbs))
    body.append(f'<section id="failures"><h2>Failures</h2>{_failures_table(df, root)}</section>')

    page = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        # No request may leave the file: forbid everything but inline styles and data: images.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
        "style-src 'unsafe-inline'\">"
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{_esc(title)}</h1><div class=\"sub\">{_esc(sub)}</div></header>"
        f"<nav>{''.join(nav)}</nav><main>{''.join(body)}</main>"
        "<footer>Generated by imgpref. Self-contained: thumbnails and charts are embedded in this file.</footer>"
        "</body></html>\n"
    )
    out = Path(out_html)
    with atomic_write(out) as tmp:
        tmp.write_text(page, encoding="utf-8", errors="backslashreplace")  # non-UTF-8 file names shown escaped
    return out
