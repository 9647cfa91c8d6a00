"""The Ray engine on a local Ray (2 CPUs) against the local engine: same scores, same errors, resume, embeddings."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("ray.data")

from imgpref.data.sample_shards import write_sample_dataset  # noqa: E402
from imgpref.scorers import parts_output  # noqa: E402
from imgpref.scorers.score_dataset import score_dataset  # noqa: E402
from imgpref.scorers.stages import EmbedAndScore  # noqa: E402
from imgpref.scorers.tiny_scorers import tiny_clip_scorers  # noqa: E402

torch.set_num_threads(1)
pytestmark = pytest.mark.slow  # a local Ray takes ~10-30 s to start on a loaded 2-core machine


@pytest.fixture(scope="module")
def local_ray():
    from imgpref.scorers.engine_ray import init_ray

    ray = init_ray(None)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("wds")
    ds = write_sample_dataset(root, shards=3, per_shard=8, table_rows=8,
                              bad={2: "text", 9: "truncated", 17: "empty", 27: "bomb", 30: "text"})
    ds["inputs"] = [str(t) for t in ds["tars"]] + [str(ds["table"])]
    return ds


def test_ray_engine_equals_local_engine(tmp_path, dataset, local_ray, monkeypatch):
    scorers = tiny_clip_scorers(n_linear=2, cosine=True)
    local = score_dataset(dataset["inputs"], scorers, out=f"{tmp_path}/local/", batch_size=8, progress=False,
                          save_embeddings=True)
    # interrupt a Ray-bound run's local twin after 2 batches, then let the Ray engine finish it (same parts)
    real = EmbedAndScore.__call__
    calls = {"n": 0}

    def dies(self, batch):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, batch)

    monkeypatch.setattr(EmbedAndScore, "__call__", dies)
    with pytest.raises(KeyboardInterrupt):
        score_dataset(dataset["inputs"], scorers, out=f"{tmp_path}/ray/", batch_size=8, progress=False,
                      save_embeddings=True)
    monkeypatch.setattr(EmbedAndScore, "__call__", real)
    remote = score_dataset(dataset["inputs"], scorers, out=f"{tmp_path}/ray/", batch_size=8, progress=False,
                           save_embeddings=True, engine="ray", resume=True)
    # 2 batches of 8 were done; their failed samples (2 bad files) are tried again, as score_paths does
    failed_done = sum(e is not None for e in list(dataset["expect"].values())[:16])
    assert failed_done == 2
    assert remote.attrs["stats"]["rows_new"] == 3 * (len(dataset["expect"]) - 16 + failed_done)

    n = len(dataset["expect"])
    on_disk = pd.concat([pd.read_parquet(p) for p in (tmp_path / "ray").glob("part-*.parquet")])
    assert len(on_disk) == 3 * n and not on_disk.duplicated(["abs_path", "scorer"]).any()
    a = local.set_index(["path", "scorer"]).sort_index()
    b = remote.set_index(["path", "scorer"]).sort_index()
    assert list(a.index) == list(b.index)
    np.testing.assert_allclose(b["score"].to_numpy(), a["score"].to_numpy(), atol=1e-5, rtol=0)
    assert list(a["error"].fillna("")) == list(b["error"].fillna(""))  # the same bad files, the same reasons
    bad = {k for k, e in dataset["expect"].items() if e is not None}
    assert set(a.index.get_level_values(0)[a["error"].notna()]) == bad

    ea, _ = parts_output.read_embeddings(tmp_path / "local")
    eb, _ = parts_output.read_embeddings(tmp_path / "ray")
    ea, eb = ea.set_index("key").sort_index(), eb.set_index("key").sort_index()
    assert list(ea.index) == list(eb.index) and len(ea) == n - len(bad)
    np.testing.assert_allclose(np.stack(eb["emb_0"].to_list()), np.stack(ea["emb_0"].to_list()), atol=1e-5)


def test_ray_engine_with_tensor_decode_equals_local(tmp_path, dataset, local_ray, monkeypatch):
    """`--decode gpu` on Ray: the read tasks pass the bytes on, the model actor decodes them (here the tensor path
    on a CPU actor, the driver's CUDA check bypassed); the same scores and errors as the local engine's tensor
    path."""
    from imgpref.scorers import gpu_decode

    monkeypatch.setattr(gpu_decode, "check_gpu_decode", lambda device: None)
    scorers = tiny_clip_scorers(n_linear=1, cosine=False)
    kw = dict(batch_size=8, progress=False, device="cpu", decode="gpu")
    local = score_dataset(dataset["inputs"], scorers, out=f"{tmp_path}/local.parquet", **kw)
    remote = score_dataset(dataset["inputs"], scorers, out=f"{tmp_path}/ray.parquet", engine="ray", **kw)
    assert local.attrs["stats"]["decoded_gpu"] == len(dataset["expect"]) - 5  # every good JPEG, not the 5 bad
    a = local.set_index(["path", "scorer"]).sort_index()
    b = remote.set_index(["path", "scorer"]).sort_index()
    assert list(a.index) == list(b.index) and len(a) == len(dataset["expect"])
    np.testing.assert_allclose(b["score"].to_numpy(), a["score"].to_numpy(), atol=1e-5, rtol=0)
    assert list(a["error"].fillna("")) == list(b["error"].fillna(""))
