"""Every preset declares its licence and metadata; `imgpref scorers` lists them (table and --json)."""
from __future__ import annotations

import json

from typer.testing import CliRunner

from imgpref.scorers.metadata import metadata_for
from imgpref.scorers.registry import get_preset, list_scorers


def test_every_builtin_preset_has_metadata_consistent_with_its_info():
    for name in list_scorers():
        if not get_preset(name).build_backbone.__module__.startswith("imgpref.scorers"):
            continue  # registered by another part (e.g. the world's gold judge): metadata optional
        meta = metadata_for(name)
        assert meta is not None, name
        assert meta.licence and meta.backbone and meta.input_size and meta.score_range, name
        assert meta.higher_is_better == get_preset(name).info.higher_is_better, name


def test_published_numbers_are_the_hpsv3_table_and_restrictions_are_flagged():
    # REFERENCE.md's table (HPSv3 README), typed here by hand
    expected = {"pickscore": (61.6, 70.5, 79.8, 65.6), "hpsv2": (65.7, 63.8, 83.3, 65.3),
                "imagereward": (65.1, 61.1, 74.0, 58.6), "laion-aesthetic": (57.4, 56.8, 76.8, 59.9),
                "clipscore-vit-h-14-noprefix": (57.1, 60.8, 65.1, 48.6)}
    keys = ("imagereward_test", "pickapic_test", "hpdv2_test", "hpdv3_test")
    for name, accs in expected.items():
        pub = metadata_for(name).published
        assert tuple(pub[k].accuracy for k in keys) == accs, name
        assert all("HPSv3" in pub[k].source for k in keys)
    assert metadata_for("pickscore").published["pickapic_test_unique"].accuracy == 80.2
    assert metadata_for("aesthetic-v2.5").licence == "AGPL-3.0"
    assert metadata_for("aesthetic-v2.5").restriction == "copyleft"
    assert not metadata_for("hpsv2").restriction and metadata_for("hpsv2").licence == "Apache-2.0"


def test_scorers_command_table_and_json():
    from imgpref.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["scorers", "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert set(rows) == set(list_scorers())
    assert rows["imagereward"]["licence"] == "Apache-2.0"
    assert rows["pickscore"]["published"]["pickapic_test"]["accuracy"] == 70.5
    res = runner.invoke(app, ["scorers"])
    assert res.exit_code == 0 and "AGPL-3.0" in res.stdout and "70.5" in res.stdout
