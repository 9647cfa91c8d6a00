"""DEAR / REPID rendering preferences: renderings per scene plus a votes table (data_cards/dear.md).

Accepted layouts (SRC is the folder, or the votes file itself):

    REPID release (vsevolodpl/REPID):  SRC/images/<rendering>/<scene>.jpeg   (original, tiff16_a ... tiff16_e)
                                       SRC/train_processed_markup.csv, SRC/markup/*.tsv (raw per-vote markup)
    imgpref / synth layout:            SRC/<scene>/<rendering>.<ext>  or  SRC/images/<scene>/<rendering>.<ext>
                                       SRC/votes.csv (or the only *.csv in SRC)

Votes table (.csv or .tsv; column names are matched case-insensitively, a `PREFIX:` such as Toloka's
`INPUT:` / `OUTPUT:` / `ASSIGNMENT:` is ignored, and common synonyms are accepted, see data_cards/dear.md):
    per vote:    scene, left, right, choice            choice left / right / equal (tie, "Left preferable",
                                                       "Both equal", ... are read by their words)
    aggregated:  scene, left, right, n_left, n_right, n_equal
`left` / `right` name a rendering of the scene, or hold an image path / URL ending in `<rendering>/<scene>.<ext>`
(then `scene` may be absent). Optional: split (per scene), annotator (worker id).
Votes are summed per unordered pair of one scene (image_0 = the `left` rendering of the first row naming the
pair); with `per_annotator=True` each annotator keeps its own rows (annotator = worker id), for pluralistic
heads. group = scene. Rows of scenes whose images are not downloaded are skipped and counted as "missing image"
(the published markup may name more scenes than the 100-scene sample ships images for).
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pandas as pd

from imgpref.data.readers._common import IMAGE_SUFFIXES, ConvertReport, PairAggregator, find_by_stem, read_table

_SPLITS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test", "": ""}
SYNONYMS = {
    "scene": ("scene", "scene_id", "scene_name", "image_id", "image_name", "photo", "photo_id", "name"),
    "left": ("left", "image_left", "left_image", "img_left", "left_img", "left_url", "url_left", "image_left_url",
             "left_path", "path_left", "left_rendering", "rendering_left"),
    "right": ("right", "image_right", "right_image", "img_right", "right_img", "right_url", "url_right",
              "image_right_url", "right_path", "path_right", "right_rendering", "rendering_right"),
    "choice": ("choice", "result", "answer", "label", "vote", "preference", "pref", "winner"),
    "annotator": ("annotator", "annotator_id", "worker_id", "worker", "user_id", "user", "performer",
                  "performer_id", "rater", "rater_id", "assessor"),
    "n_left": ("n_left", "left_votes", "votes_left", "left_count", "count_left"),
    "n_right": ("n_right", "right_votes", "votes_right", "right_count", "count_right"),
    "n_equal": ("n_equal", "equal_votes", "votes_equal", "equal_count", "count_equal", "n_tie", "tie_votes",
                "votes_tie"),
    "split": ("split", "subset", "fold"),
    "status": ("status", "assignment_status"),
}
# REPID names its rendering folders after the FiveK distribution (tiff16_a = expert A); other tables may use
# the expert letter or the synth names.
_RENDERING_ALIASES = {**{k: "original" for k in ("original", "orig", "raw", "input", "source")},
                      **{f"{p}{c}": f"tiff16_{c}" for c in "abcde"
                         for p in ("", "expert", "expert_", "expert ", "tiff16_", "tiff_")}}
_VOTES_NAMES = ("votes.csv", "train_processed_markup.csv")


# Crowdsourcing exports (Toloka) also carry control answers and hints under these prefixes: never the votes.
_IGNORED_PREFIXES = ("golden", "hint", "acceptance")


def _norm(column: str) -> str | None:
    """The column's role name: lower case, `PREFIX:` dropped; None for columns that never hold votes."""
    prefix, _, name = str(column).strip().lower().rpartition(":")
    if prefix in _IGNORED_PREFIXES:
        return None
    return re.sub(r"[^a-z0-9]+", "_", name).strip("_")


def _votes_files(src: Path) -> list[Path]:
    if src.is_file():
        return [src]
    if not src.is_dir():
        raise FileNotFoundError(f"DEAR source not found: {src}; pass the folder holding the votes file and images")
    for name in _VOTES_NAMES:
        if (src / name).is_file():
            return [src / name]
    csvs = sorted(src.glob("*.csv"))
    if len(csvs) == 1:
        return csvs
    if len(csvs) > 1:
        raise ValueError(f"several CSV files in {src} ({', '.join(c.name for c in csvs)}); name the votes file "
                         f"votes.csv or pass it as SRC")
    tsvs = sorted(src.glob("*.tsv")) or sorted((src / "markup").glob("*.tsv"))
    if tsvs:
        return tsvs
    raise FileNotFoundError(f"no votes file in {src}; expected {src / 'votes.csv'}, train_processed_markup.csv or "
                            f"markup/*.tsv (see data_cards/dear.md)")


def _columns(table: pd.DataFrame, path: Path) -> dict[str, str]:
    """Canonical role -> the table's column, by SYNONYMS; raises on a missing required role."""
    normed: dict[str, str] = {}
    for column in table.columns:
        key = _norm(column)
        if key is not None:
            normed.setdefault(key, column)  # the first column of a name wins
    found = {role: next((normed[s] for s in names if s in normed), None) for role, names in SYNONYMS.items()}
    found = {k: v for k, v in found.items() if v is not None}
    aggregated = {"n_left", "n_right", "n_equal"} <= set(found)
    needed = ["left", "right"] + ([] if aggregated else ["choice"])
    first_left = next((v for v in table[found["left"]] if str(v).strip()), "") if "left" in found else ""
    if "/" not in str(first_left):  # renderings named, not image paths: the scene must be a column
        needed.insert(0, "scene")
    missing = [c for c in needed if c not in found]
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {missing}; expected scene,left,right,choice (one row per vote) or "
            f"scene,left,right,n_left,n_right,n_equal (aggregated), left/right as rendering names or image paths; "
            f"found {list(table.columns)}; see data_cards/dear.md")
    if aggregated:
        found.pop("choice", None)
    return found


def _choice(value: str) -> tuple[int, int, int] | None:
    """Votes of one answer, read by its words: "left" / "Left preferable" -> left, "equal" / "Both equal" -> tie."""
    words = set(re.findall(r"[a-z]+", value.lower()))
    left, right = "left" in words, "right" in words
    if left != right:
        return (1, 0, 0) if left else (0, 1, 0)
    if words & {"equal", "equally", "same", "both", "tie", "draw"}:
        return 0, 0, 1
    return None


def _count(value: str) -> int | None:
    try:
        number = float(value)
    except ValueError:
        return None
    if number < 0 or number != int(number):
        return None
    return int(number)


class _Renderings:
    """Finds the image of (scene, rendering) in either layout, or of an image path / URL in the table."""

    def __init__(self, roots: list[Path]):
        self.roots = roots
        self.cache: dict[tuple[str, str], Path | None] = {}
        self.sides: dict[tuple[str, str, str], tuple[str, Path | None]] = {}
        # each folder is listed once: the full REPID markup names ~5,000 scenes, the sample ships images of 100
        self.listings: dict[Path, dict[str, Path]] = {}

    def side(self, scene: str, value: str) -> tuple[str, Path | None]:
        """(scene, image) of one side; scene comes from the path when the table has none."""
        key = ("side", scene, value)
        if key not in self.sides:
            self.sides[key] = self._side(scene, value)
        return self.sides[key]

    def _side(self, scene: str, value: str) -> tuple[str, Path | None]:
        if "/" in value:
            rel = value.split("?")[0].split("://")[-1]
            parts = [p for p in rel.split("/") if p]
            for root in self.roots:
                for k in range(len(parts)):  # longest suffix of the path that exists under a root
                    cand = root.joinpath(*parts[k:])
                    if cand.is_file():
                        return scene or Path(parts[-1]).stem, cand.resolve()
            if len(parts) >= 2:
                scene = scene or Path(parts[-1]).stem
                return scene, self.find(scene, parts[-2])
            return scene, None
        return scene, self.find(scene, value)

    def find(self, scene: str, rendering: str) -> Path | None:
        key = (scene, rendering)
        if key not in self.cache:
            names = [rendering]
            alias = _RENDERING_ALIASES.get(rendering.strip().lower())
            if alias and alias != rendering:
                names.append(alias)
            self.cache[key] = next((p for name in names for p in self._candidates(scene, name) if p), None)
        return self.cache[key]

    def _candidates(self, scene: str, rendering: str):
        for root in self.roots:
            for base, stem in ((root / scene, rendering), (root / "images" / scene, rendering),
                               (root / "images" / rendering, scene), (root / rendering, scene)):
                yield self._in_folder(base, stem)

    def _in_folder(self, base: Path, stem: str) -> Path | None:
        """`base/stem` when stem already ends in an image suffix, else `base/stem.<any image suffix>`."""
        if Path(stem).suffix.lower() in IMAGE_SUFFIXES and (base / stem).is_file():
            return (base / stem).resolve()
        return find_by_stem(base, stem, self.listings)


def read(src: str | Path, out: str | Path | None = None, *,
         per_annotator: bool = False) -> tuple[pd.DataFrame, ConvertReport]:
    """Canonical rows (absolute image paths) from a DEAR / REPID folder or votes file, and the report.

    `per_annotator=True` keeps one row per (annotator, pair) with `annotator` set (the table needs a worker
    column); by default votes are summed over annotators.
    """
    report = ConvertReport("dear", str(src), str(out or ""))
    agg = PairAggregator()
    for votes_path in _votes_files(Path(src)):
        _read_table(votes_path, per_annotator, agg, report)
    report.merged = agg.merged
    return agg.frame(), report


def _read_table(votes_path: Path, per_annotator: bool, agg: PairAggregator, report: ConvertReport) -> None:
    table = read_table(votes_path)
    cols = _columns(table, votes_path)
    if per_annotator and "annotator" not in cols:
        raise ValueError(f"{votes_path}: --per-annotator needs an annotator column (one of "
                         f"{', '.join(SYNONYMS['annotator'])}); found {list(table.columns)}")
    root = votes_path.parent
    renderings = _Renderings([root, root.parent] if root.parent != root else [root])
    report.records_read += len(table)
    skipped: Counter = report.skipped
    roles = [r for r in ("scene", "left", "right", "choice", "n_left", "n_right", "n_equal", "split", "status")
             if r in cols]
    if per_annotator:
        roles.append("annotator")
    frame = pd.DataFrame({role: table[cols[role]].astype(str).str.strip() for role in roles})
    # Identical rows (millions of single votes) are counted once per distinct row; sort=False keeps the order of
    # first appearance, so the orientation rule "image_0 = left as first seen" is unchanged.
    distinct = frame.groupby(roles, sort=False).size().reset_index(name="_n")
    for record in distinct.to_dict("records"):
        n = int(record["_n"])
        if record.get("status", "").lower() == "rejected":  # a rejected crowdsourcing assignment is no vote
            skipped["rejected assignment"] += n
            continue
        left, right = record["left"], record["right"]
        if not left or not right or ("scene" in record and not record["scene"]):
            skipped["empty scene or rendering name"] += n
            continue
        if left == right:
            skipped["same rendering on both sides"] += n
            continue
        if "choice" in record:
            votes = _choice(record["choice"])
            if votes is None:
                skipped["unknown choice"] += n
                continue
            v0, v1, vt = (c * n for c in votes)
        else:
            counts = [_count(record[c]) for c in ("n_left", "n_right", "n_equal")]
            if any(c is None for c in counts):
                skipped["invalid vote counts"] += n
                continue
            if sum(counts) == 0:
                skipped["zero votes"] += n
                continue
            v0, v1, vt = (c * n for c in counts)
        split = _SPLITS.get(record.get("split", "").lower())
        if split is None:
            skipped["unknown split"] += n
            continue
        scene_l, img_l = renderings.side(record.get("scene", ""), left)
        scene_r, img_r = renderings.side(record.get("scene", ""), right)
        if img_l is None or img_r is None:
            skipped["missing image"] += n
            continue
        if img_l == img_r:
            skipped["same rendering on both sides"] += n
            continue
        if scene_l != scene_r:
            skipped["renderings of different scenes"] += n
            continue
        agg.add(str(img_l), str(img_r), v0, v1, vt, group=scene_l, split=split,
                annotator=record.get("annotator", "") if per_annotator else "")
