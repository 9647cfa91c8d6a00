"""Readers for published preference formats; each turns SRC into canonical manifest rows.

`convert(fmt, src, out, **options)` reads SRC in format `fmt`, writes the canonical manifest `out` and returns
the report. Options a reader takes: `images` (a folder of downloaded images: pickapic, hpdv2, imagereward) and
`per_annotator` (dear: one row per annotator instead of summed votes).
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from imgpref.data.manifest import write_manifest
from imgpref.data.readers import dear, hpdv2, hpdv3, imagereward, pickapic
from imgpref.data.readers._common import ConvertReport

READERS = {"dear": dear.read, "pickapic": pickapic.read, "hpdv2": hpdv2.read, "hpdv3": hpdv3.read,
           "imagereward": imagereward.read}
FORMATS = tuple(READERS)

__all__ = ["FORMATS", "READERS", "ConvertReport", "convert"]


def convert(fmt: str, src: str | Path, out: str | Path, **options: Any) -> ConvertReport:
    """Convert SRC (format `fmt`: dear, pickapic, hpdv2, hpdv3 or imagereward) into the canonical manifest `out`.

    `options` go to the reader (see the module docstring); None values are dropped, an option the format does
    not take is a ValueError.
    """
    key = fmt.strip().lower().replace("-", "").replace("_", "")
    aliases = {"repid": "dear", "pick": "pickapic", "hpd2": "hpdv2", "hpd3": "hpdv3", "ir": "imagereward"}
    key = aliases.get(key, key)
    if key not in READERS:
        raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    out = Path(out)
    if out.suffix.lower() not in (".csv", ".jsonl", ".parquet"):
        raise ValueError(f"--out {out}: the manifest must end in .csv, .jsonl or .parquet")
    reader = READERS[key]
    options = {k: v for k, v in options.items() if v is not None and v is not False}
    accepted = set(inspect.signature(reader).parameters) - {"src", "out"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        flag = lambda name: "--" + name.replace("_", "-")  # noqa: E731  (as the CLI spells them)
        shown = ", ".join(flag(a) for a in sorted(accepted)) or "none"
        raise ValueError(f"--from {key} does not take {', '.join(flag(u) for u in unknown)} "
                         f"(options it takes: {shown})")
    df, report = reader(Path(src), out, **options)
    if len(df) == 0:
        raise ValueError(f"no valid pairs in {src} ({report}); check the layout against data_cards/{key}.md")
    write_manifest(df, out)
    report.rows_written = len(df)
    report.out = str(out)
    return report
