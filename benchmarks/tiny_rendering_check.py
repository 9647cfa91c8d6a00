"""Check the tiny CPU recipe (issue 3, done-when 1): synthesise a rendering-preference set, train
`configs/train/tiny_rendering.yaml` on it, evaluate on the test split, and compare with the oracle (the true
utilities' accuracy vs majority on the same pairs).

    python benchmarks/tiny_rendering_check.py [--generator synth|alt] [--scenes 100] [--seeds 0 1 2]
        [--size 64] [--set key=value ...] [--no-write]

Prints per run: train wall time, test accuracy vs majority, oracle accuracy, ratio (target >= 0.90) and ECE
(target <= 0.05); writes the table to the "tiny_rendering" section of benchmarks/RESULTS.md (unless --no-write).
"synth" is `imgpref data synth` (the data helper's generator); "alt" is benchmarks/tiny_rendering_altgen.py,
an independent generator (other photos/crops, edit ranges, utility function and image size).
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
SECTION = "tiny_rendering"


def make_data(generator: str, out: Path, scenes: int, seed: int, size: int) -> Path:
    if generator == "synth":
        from imgpref.data.synth import make_rendering_dataset

        make_rendering_dataset(out, scenes=scenes, seed=seed, size=size)
        return out / "manifest.csv"
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from tiny_rendering_altgen import generate

    return generate(out, scenes=scenes, seed=seed, size=(size * 3 // 4, size))


def oracle_accuracy(manifest: Path, split: str = "test") -> float:
    """Accuracy vs majority of the true utilities on the `split` pairs (50/50 pairs left out)."""
    from imgpref.data.manifest import read_manifest

    df = read_manifest(manifest, split=split)
    table = pd.read_csv(manifest.parent / "utilities.csv")
    util = {str((manifest.parent / p).resolve()): float(u) for p, u in zip(table["image"], table["utility"])}
    u0 = np.array([util[str(Path(p).resolve())] for p in df["image_0"]])
    u1 = np.array([util[str(Path(p).resolve())] for p in df["image_1"]])
    v0, v1 = df["votes_0"].to_numpy(), df["votes_1"].to_numpy()
    dec = v0 != v1
    credit = np.where(u0 == u1, 0.5, ((u0 > u1) == (v0 > v1)).astype(float))
    return float(credit[dec].mean())


def run_one(generator: str, scenes: int, seed: int, size: int, overrides: list[str], work: Path) -> dict:
    from imgpref.eval.evaluate import evaluate

    data_dir = work / f"{generator}_s{seed}"
    manifest = make_data(generator, data_dir, scenes, seed, size)
    out = work / f"run_{generator}_s{seed}"
    cmd = [str(Path(sys.executable).with_name("imgpref")), "train", "--config", str(ROOT / "configs/train/tiny_rendering.yaml"),
           "--data", str(manifest), "--out", str(out)]
    for o in overrides:
        cmd += ["--set", o]
    t0 = time.time()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    seconds = time.time() - t0
    m = evaluate(str(out), manifest, split="test", protocol="votes", n_resamples=200)
    oracle = oracle_accuracy(manifest)
    return {"generator": generator, "seed": seed, "scenes": scenes, "train_s": round(seconds, 1),
            "accuracy": round(m["accuracy"], 4), "oracle": round(oracle, 4),
            "ratio": round(m["accuracy"] / oracle, 4), "ece": round(m["ece"], 4), "nll": round(m["nll"], 4),
            "bt_scale": round(float(m.get("bt_scale", 1.0)), 3), "n_pairs": m["n_pairs"]}


def write_section(table: str, command: str) -> None:
    body = (f"## {SECTION}\n\nTiny CPU recipe `configs/train/tiny_rendering.yaml` trained from scratch; test split; "
            f"targets: ratio = accuracy / oracle >= 0.90, ECE <= 0.05; train_s = wall time of `imgpref train`.\n\n"
            f"Command: `{command}`\n\n{table}\n")
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"^## {SECTION}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(body + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + body
    RESULTS.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generator", choices=["synth", "alt", "both"], default="both")
    ap.add_argument("--scenes", type=int, default=100)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--size", type=int, default=64, help="image width (alt uses 3/4 of it as height)")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--work", default=None, help="keep data and runs here (default: a temp folder)")
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    gens = ["synth", "alt"] if a.generator == "both" else [a.generator]
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="imgpref-tiny-check-"))
    rows = []
    for g in gens:
        for s in a.seeds:
            r = run_one(g, a.scenes, s, a.size, a.overrides, work)
            print(r, flush=True)
            rows.append(r)
    df = pd.DataFrame(rows)
    table = df.to_markdown(index=False) if _has_tabulate() else "```\n" + df.to_string(index=False) + "\n```"
    print(table)
    (work / "results.json").write_text(df.to_json(orient="records", indent=1))
    if not a.no_write:
        write_section(table, "python " + " ".join(["benchmarks/tiny_rendering_check.py"] + sys.argv[1:]))


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
