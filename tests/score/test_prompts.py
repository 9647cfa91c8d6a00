"""Prompt sources and their precedence: --prompt > prompts file > sidecar .txt."""
from __future__ import annotations

import json

import pytest

from imgpref.data.prompts import PromptFile, PromptResolver, sidecar_prompt


@pytest.fixture
def layout(tmp_path):
    imgs = tmp_path / "imgs"
    (imgs / "sub").mkdir(parents=True)
    for n in ["a.png", "b.png", "sub/c.png", "d.png"]:
        (imgs / n).write_bytes(b"x")
    (imgs / "a.txt").write_text("  sidecar a \n")
    (imgs / "d.txt").write_text("sidecar d")
    return tmp_path, imgs


def test_precedence(layout):
    root, imgs = layout
    csv = root / "prompts.csv"
    csv.write_text('path,prompt\nimgs/a.png,"file a, with comma"\nimgs/sub/c.png,file c\nimgs/d.png,\n')
    both = PromptResolver(prompts=csv)
    assert both(imgs / "a.png") == "file a, with comma"  # file beats sidecar
    assert both(imgs / "sub" / "c.png") == "file c"
    assert both(imgs / "d.png") == "sidecar d"  # an empty prompt in the file falls back to the sidecar
    assert both(imgs / "b.png") is None  # nothing anywhere
    explicit = PromptResolver(prompt="explicit")
    assert explicit(imgs / "a.png") == "explicit" and explicit(imgs / "b.png") == "explicit"
    assert PromptResolver()(imgs / "a.png") == "sidecar a"
    assert sidecar_prompt(imgs / "b.png") is None
    with pytest.raises(ValueError, match="not both"):
        PromptResolver(prompt="x", prompts=csv)


def test_jsonl_absolute_relative_and_bare_names(layout, tmp_path):
    root, imgs = layout
    other = tmp_path / "elsewhere"
    other.mkdir()
    jl = other / "p.jsonl"
    rows = [{"file": str(imgs / "a.png"), "prompt": "abs a"}, {"image": "b.png", "prompt": "bare b"},
            {"path": "../imgs/sub/c.png", "prompt": "rel c"}]
    jl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    pf = PromptFile(jl)
    assert pf.get(imgs / "a.png") == "abs a"
    assert pf.get(imgs / "b.png") == "bare b"  # bare name matches in any folder
    assert pf.get(imgs / "sub" / "c.png") == "rel c"  # relative to the prompts file's folder
    assert pf.get(imgs / "d.png") is None


def test_ambiguous_bare_name_and_bad_columns(tmp_path):
    f = tmp_path / "p.csv"
    f.write_text("file,prompt\nx.png,one\nx.png,two\n")
    with pytest.raises(ValueError, match="several rows"):
        PromptFile(f).get(tmp_path / "deep" / "x.png")
    g = tmp_path / "q.csv"
    g.write_text("filename,caption\nx.png,one\n")
    with pytest.raises(ValueError, match="path column"):
        PromptFile(g)
    with pytest.raises(FileNotFoundError):
        PromptFile(tmp_path / "missing.csv")
    h = tmp_path / "p.yaml"
    h.write_text("x")
    with pytest.raises(ValueError, match="unsupported extension"):
        PromptFile(h)
