"""Recursive image discovery: extensions, order, explicit files, hidden entries, symlink loops."""
from __future__ import annotations

import os

import pytest

from imgpref.data.discovery import discover_images, is_image_file


def test_recursive_sorted_extensions(tmp_path):
    for rel in ["b.PNG", "a.jpg", "sub/c.webp", "sub/deeper/d.TIFF", "z.bmp", "y.gif", "x.jpeg", "w.tif",
                "notes.txt", "data.csv", ".hidden.png", ".git/e.png"]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    found = [p.relative_to(tmp_path).as_posix() for p in discover_images(tmp_path)]
    assert found == sorted(found)
    assert set(found) == {"b.PNG", "a.jpg", "sub/c.webp", "sub/deeper/d.TIFF", "z.bmp", "y.gif", "x.jpeg", "w.tif"}
    assert is_image_file("A.JPG") and not is_image_file("a.txt")


def test_explicit_files_kept_in_order_and_deduplicated(tmp_path):
    (tmp_path / "d").mkdir()
    for n in ["d/1.png", "d/2.png", "odd.dat"]:
        (tmp_path / n).write_bytes(b"x")
    got = discover_images([tmp_path / "odd.dat", tmp_path / "d", tmp_path / "d" / "1.png"])
    assert [p.name for p in got] == ["odd.dat", "1.png", "2.png"]


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        discover_images([tmp_path / "nope"])


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks")
def test_symlink_loop_terminates(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "img.png").write_bytes(b"x")
    os.symlink(tmp_path / "a", tmp_path / "a" / "b" / "loop")  # a/b/loop -> a
    os.symlink(tmp_path / "a" / "b", tmp_path / "linked")  # a second route to the same folder
    got = discover_images(tmp_path)
    assert [p.name for p in got] == ["img.png"]
