"""Image sources: files, globs, path lists, Parquet/CSV tables (paths, bytes, HF image structs), WebDataset tars."""
from __future__ import annotations

import hashlib
import io
import os
import tarfile

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from imgpref.data.images import ImageLoadError, load_image
from imgpref.data.sample_shards import bad_bytes, jpeg_bytes, write_sample_dataset
from imgpref.data.sources import decode, open_sources


def _write_files(folder, n):
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k in range(n):
        p = folder / f"im{k}.jpg"
        p.write_bytes(jpeg_bytes(k))
        out.append(p)
    return out


def _samples(inputs, **kw):
    return [s for sh in open_sources(inputs, **kw) for s in sh.samples()]


def _stat_id(p):
    st = os.stat(p)
    return f"{st.st_size}:{st.st_mtime_ns}"


def test_folder_glob_and_path_list(tmp_path):
    files = _write_files(tmp_path / "imgs", 3)
    (tmp_path / "imgs" / "im1.txt").write_text("sidecar prompt")
    by_folder = _samples([tmp_path / "imgs"])
    assert [s.path for s in by_folder] == [str(f) for f in files]
    assert all(s.prompt is None for s in by_folder)  # no resolver: no prompt (sidecars come through one)
    by_glob = _samples([str(tmp_path / "imgs" / "im[02].jpg")])
    assert [os.path.basename(s.key) for s in by_glob] == ["im0.jpg", "im2.jpg"]
    lst = tmp_path / "list.txt"
    lst.write_text("# my images\nimgs/im2.jpg\n\n" + str(files[0]) + "\n")
    listed = _samples([lst])
    assert [s.abs_key for s in listed] == [str(files[2].resolve()), str(files[0])]
    assert listed[0].identity == _stat_id(files[2])  # a file's identity is its size + mtime
    with pytest.raises(FileNotFoundError, match="nomatch"):
        open_sources([str(tmp_path / "nomatch*.jpg")])
    lst.write_text("imgs/missing.jpg\n")
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        open_sources([lst])


def test_sidecar_prompts_through_the_resolver(tmp_path):
    from imgpref.data.prompts import PromptResolver

    files = _write_files(tmp_path / "imgs", 2)
    (tmp_path / "imgs" / "im1.txt").write_text("sidecar prompt\n")
    got = _samples([tmp_path / "imgs"], resolver=PromptResolver())
    assert [s.prompt for s in got] == [None, "sidecar prompt"] and got[0].path == str(files[0])


def test_parquet_and_csv_with_a_path_column(tmp_path):
    files = _write_files(tmp_path / "imgs", 2)
    pd.DataFrame({"path": ["imgs/im0.jpg", "imgs/im1.jpg"], "caption": ["a cat", ""]}).to_parquet(
        tmp_path / "t.parquet")
    got = _samples([tmp_path / "t.parquet"])
    assert [s.path for s in got] == [str(tmp_path / "imgs/im0.jpg"), str(tmp_path / "imgs/im1.jpg")]
    assert [s.prompt for s in got] == ["a cat", None]  # empty prompt = none
    assert got[1].identity == _stat_id(files[1]) and got[1].key == "imgs/im1.jpg"
    pd.DataFrame({"file": [str(files[1])], "prompt": ["x"]}).to_csv(tmp_path / "t.csv", index=False)
    (c,) = _samples([tmp_path / "t.csv"])
    assert c.path == str(files[1]) and c.prompt == "x"
    pd.DataFrame({"foo": [1]}).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="no image column"):
        open_sources([tmp_path / "bad.parquet"])


def test_parquet_bytes_and_hf_image_structs(tmp_path):
    a, b = jpeg_bytes(1), jpeg_bytes(2)
    pd.DataFrame({"jpg": [a, b], "text": ["p0", "p1"]}).to_parquet(tmp_path / "bytes.parquet")
    got = _samples([tmp_path / "bytes.parquet"])
    assert [s.data for s in got] == [a, b] and [s.prompt for s in got] == ["p0", "p1"]
    # the identity of embedded bytes is a content hash (blake2b-128), computed here with hashlib
    assert got[0].identity == "b2:" + hashlib.blake2b(a, digest_size=16).hexdigest()
    assert got[1].key == f"{tmp_path / 'bytes.parquet'}::row1"
    # Hugging Face datasets' Image() feature: a struct {"bytes", "path"}; bytes win, a path-only row is a file
    (tmp_path / "x.jpg").write_bytes(b)
    pd.DataFrame({"image": [{"bytes": a, "path": "orig.jpg"}, {"bytes": None, "path": "x.jpg"}]}).to_parquet(
        tmp_path / "hf.parquet")
    s0, s1 = _samples([tmp_path / "hf.parquet"])
    assert s0.data == a and s0.key.endswith("::orig.jpg")
    assert s1.data is None and s1.path == str(tmp_path / "x.jpg")
    assert np.array_equal(np.asarray(decode(s0)), np.asarray(load_image(a)))


def test_webdataset_folder_img2dataset_layout(tmp_path):
    ds = write_sample_dataset(tmp_path / "wds", shards=2, per_shard=3, bad={4: "text"})
    shards = open_sources([tmp_path / "wds"])  # the NNNNN.parquet status tables are not image tables
    assert [sh.kind for sh in shards] == ["tar", "tar"]
    got = [s for sh in shards for s in sh.samples()]
    assert [s.key for s in got] == list(ds["expect"])
    assert [s.prompt for s in got] == [ds["prompts"][k] for k in ds["expect"]]  # .txt or else .json caption
    tar0 = str(tmp_path / "wds" / "00000.tar")
    assert got[0].key == f"{tar0}::000000000" and got[0].identity == _stat_id(tar0)
    assert got[0].data == jpeg_bytes(0)
    with pytest.raises(ImageLoadError, match="not an image"):
        decode(got[4])


def test_tar_grouping_up_to_the_first_dot_and_missing_image(tmp_path):
    tar = tmp_path / "s.tar"
    with tarfile.open(tar, "w") as tf:
        for name, data in (("a/x.seg.png", b"1"), ("a/x.jpg", jpeg_bytes(3)), ("a/x.txt", b" hi "),
                           ("y.json", b'{"prompt": "from json"}'), ("z.jpeg", bad_bytes("empty"))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    x, y, z = _samples([tar])
    assert x.key.endswith("::a/x") and x.prompt == "hi" and x.data == jpeg_bytes(3)
    assert y.error and "no image member" in y.error and y.prompt == "from json"
    assert z.data == b"" and z.prompt is None
    with pytest.raises(ImageLoadError, match="empty file"):
        decode(z)


def test_bad_bytes_get_the_loaders_reasons(tmp_path):
    # the same reasons as the loader gives for files: bytes go through the one loader
    for kind, reason in (("bomb", "decompression bomb"), ("truncated", "truncated")):
        p = tmp_path / f"{kind}.img"
        p.write_bytes(bad_bytes(kind))
        with pytest.raises(ImageLoadError) as from_file:
            load_image(p)
        pd.DataFrame({"image": [bad_bytes(kind)]}).to_parquet(tmp_path / f"{kind}.parquet")
        (s,) = _samples([tmp_path / f"{kind}.parquet"])
        with pytest.raises(ImageLoadError) as from_bytes:
            decode(s)
        assert reason in from_bytes.value.reason and from_bytes.value.reason == from_file.value.reason


def test_rgba_bytes_are_composited_like_files(tmp_path):
    im = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    pd.DataFrame({"bytes": [buf.getvalue()]}).to_parquet(tmp_path / "a.parquet")
    (s,) = _samples([tmp_path / "a.parquet"])
    assert np.asarray(decode(s))[0, 0].tolist() == [255, 255, 255]  # transparent over white
