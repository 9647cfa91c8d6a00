"""Readers for published preference formats; each turns SRC into canonical manifest rows.

`convert(fmt, src, out)` reads SRC in format `fmt`, writes the canonical manifest `out` and returns the report.
"""
from __future__ import annotations

from pathlib import Path

from imgpref.data.manifest import write_manifest
from imgpref.data.readers import dear, hpdv2, hpdv3, pickapic
from imgpref.data.readers._common import ConvertReport

READERS = {"dear": dear.read, "pickapic": pickapic.read, "hpdv2": hpdv2.read, "hpdv3": hpdv3.read}
FORMATS = tuple(READERS)

__all__ = ["FORMATS", "READERS", "ConvertReport", "convert"]


def convert(fmt: str, src: str | Path, out: str | Path) -> ConvertReport:
    """Convert SRC (format `fmt`: dear, pickapic, hpdv2 or hpdv3) into the canonical manifest `out`."""
    key = fmt.strip().lower().replace("-", "")
    aliases = {"repid": "dear", "pick": "pickapic", "hpd2": "hpdv2", "hpd3": "hpdv3"}
    key = aliases.get(key, key)
    if key not in READERS:
        raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    out = Path(out)
    if out.suffix.lower() not in (".csv", ".jsonl", ".parquet"):
        raise ValueError(f"--out {out}: the manifest must end in .csv, .jsonl or .parquet")
    df, report = READERS[key](Path(src), out)
    if len(df) == 0:
        raise ValueError(f"no valid pairs in {src} ({report}); check the layout against data_cards/{key}.md")
    write_manifest(df, out)
    report.rows_written = len(df)
    report.out = str(out)
    return report
