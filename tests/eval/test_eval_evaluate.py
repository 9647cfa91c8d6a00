"""`evaluate()` on real manifest files with solid-colour images and a hand-computable scorer.

Under the red scorer an image with red value r scores r / 255: 204 -> 0.8, 102 -> 0.4, 51 -> 0.2, 0 -> 0.
"""
import json
import math

import pytest

from imgpref.eval.evaluate import evaluate
from imgpref.eval.scoring import score_pairs


def sig(x):
    return 1 / (1 + math.exp(-x))


@pytest.fixture
def votes_manifest(tmp_path, kit):
    img = tmp_path / "img"
    a, b, c = kit.solid(img, "a.png", 204), kit.solid(img, "b.png", 102), kit.solid(img, "c.png", 0)
    d, e = kit.solid(img, "d.png", 153), kit.solid(img, "e.png", 153)
    t = kit.solid(img, "t.png", 255)
    rows = [
        dict(image_0=f"img/{a}", image_1=f"img/{b}", votes_0=8, votes_1=1, votes_tie=1, group="A", split="test"),
        dict(image_0=f"img/{b}", image_1=f"img/{c}", votes_0=3, votes_1=5, votes_tie=2, group="A", split="test"),
        dict(image_0=f"img/{a}", image_1=f"img/{c}", votes_0=6, votes_1=2, votes_tie=2, group="A", split="test"),
        dict(image_0=f"img/{d}", image_1=f"img/{e}", votes_0=2, votes_1=2, votes_tie=1, group="B", split="test"),
        dict(image_0=f"img/{t}", image_1=f"img/{a}", votes_0=0, votes_1=9, votes_tie=0, group="C", split="train"),
    ]
    return kit.write_manifest_csv(tmp_path / "votes.csv", rows)


def test_votes_protocol_end_to_end(votes_manifest, tmp_path, kit):
    # bt_scale 5: p(a,b) = sig(5 * 0.4) = sig(2), p(b,c) = sig(2), p(a,c) = sig(4), p(d,e) = sig(0) = 0.5
    scorer = kit.make_scorer(bt_scale=5.0)
    out = tmp_path / "out" / "metrics.json"
    m = evaluate(scorer, votes_manifest, split="test", protocol="votes", out=out, n_resamples=200)
    # By hand. q = (votes_0 + votes_tie / 2) / n = 0.85, 0.4, 0.7, 0.5; p = sig(2), sig(2), sig(4), 0.5.
    q, x = [0.85, 0.4, 0.7, 0.5], [2.0, 2.0, 4.0, 0.0]  # p = sig(x)
    # majority side 0, 1, 0 (the q = 0.5 pair is left out); the model picks side 0 every time -> 2 of 3
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["human_ceiling"] == pytest.approx((0.85 + 0.6 + 0.7 + 0.5) / 4)
    # -(q log sig(x) + (1 - q) log sig(-x)) = log(1 + e^-x) + (1 - q) x
    assert m["nll"] == pytest.approx(sum(math.log1p(math.exp(-xi)) + (1 - qi) * xi for qi, xi in zip(q, x)) / 4)
    assert m["brier"] == pytest.approx(((sig(2) - 0.85) ** 2 + (sig(2) - 0.4) ** 2 + (sig(4) - 0.7) ** 2) / 4)
    # 10 bins of p: sig(2) = 0.881 twice in [0.8, 0.9) (mean q 0.625), sig(4) = 0.982 in [0.9, 1], 0.5 alone
    assert m["ece"] == pytest.approx(2 / 4 * (sig(2) - 0.625) + 1 / 4 * (sig(4) - 0.7))
    # group A: model order a > b > c; Bradley-Terry of the votes a > c > b (c beats b 6:4, a beats b harder than
    # a beats c): 2 concordant, 1 discordant of 3 pairs -> 1/3. Group B (d, e tie in the model): undefined.
    assert m["kendall_tau"] == pytest.approx(1 / 3) and m["n_groups_tau"] == 1
    assert (m["n_pairs"], m["n_groups"], m["protocol"], m["split"], m["scorer"]) == (4, 2, "votes", "test", "red")
    assert m["bt_scale"] == 5.0
    # each distinct image is embedded once (5 test images; the train row is not scored)
    assert scorer.backbone.calls == 5
    saved = json.loads(out.read_text())
    for key in ("accuracy", "accuracy_ci", "human_ceiling", "nll", "brier", "ece", "kendall_tau", "n_pairs",
                "n_groups", "protocol", "split", "scorer"):
        assert key in saved
    assert (out.parent / "metrics_reliability.png").read_bytes()[:4] == b"\x89PNG"
    groups_csv = (out.parent / "metrics_groups.csv").read_text().splitlines()
    assert groups_csv[0].startswith("group,n_pairs") and len(groups_csv) == 3


def test_lower_is_better_scorer_is_negated(votes_manifest, kit):
    up = evaluate(kit.make_scorer(), votes_manifest, n_resamples=50)
    down = evaluate(kit.make_scorer(w=(-1.0, 0.0, 0.0), higher_is_better=False), votes_manifest, n_resamples=50)
    for key in ("accuracy", "nll", "brier", "ece", "kendall_tau"):
        assert down[key] == pytest.approx(up[key])


def test_unknown_split_and_protocol(votes_manifest, kit):
    with pytest.raises(ValueError, match="splits present: test, train"):
        evaluate(kit.make_scorer(), votes_manifest, split="val")
    with pytest.raises(ValueError, match="unknown protocol"):
        evaluate(kit.make_scorer(), votes_manifest, protocol="elo")


def test_pickapic_protocol_tunes_on_val(tmp_path, kit):
    img = tmp_path / "img"
    one, zero = kit.solid(img, "one.png", 255), kit.solid(img, "zero.png", 0)
    p2, p4 = kit.solid(img, "p2.png", 51), kit.solid(img, "p4.png", 102)
    p2b = kit.solid(img, "p2b.png", 51)
    win0, win1, tie = (1, 0, 0), (0, 1, 0), (0, 0, 1)

    def row(i0, i1, v, split):
        # one prompt per row (Pick-a-Pic style); the same image pair under another prompt is another pair
        return dict(image_0=f"img/{i0}", image_1=f"img/{i1}", votes_0=v[0], votes_1=v[1], votes_tie=v[2],
                    split=split, prompt=f"prompt {len(rows)}")

    # val (scores 1/0/0.2/0.4): as in test_pickapic_threshold_tuning_and_accuracy -> t = 0.2
    #   (1, 0) win0: |d| = tanh(.5) = .462; (0.2, 0) tie: .0997; (0, 0.4) tie: .197; (0, 1) win1: .462
    # test with t = 0.2:
    #   (1, 0) label 1 -> pred 0 -> 0; (0.4, 0.2) label 0 -> |d| = .0997 -> tie -> 0.5;
    #   (1, 0) label 0 -> 1; (0.2, 0.2) tie -> |d| = 0 -> tie -> 1        => 2.5 / 4 = 0.625
    rows: list[dict] = []
    for args in [(one, zero, win0, "val"), (p2, zero, tie, "val"), (zero, p4, tie, "val"), (zero, one, win1, "val"),
                 (one, zero, win1, "test"), (p4, p2, win0, "test"), (one, zero, win0, "test"),
                 (p2, p2b, tie, "test")]:
        rows.append(row(*args))
    manifest = kit.write_manifest_csv(tmp_path / "pap.csv", rows)
    scorer = kit.make_scorer()
    m = evaluate(scorer, manifest, protocol="pickapic", n_resamples=50)
    assert m["threshold"] == 0.2 and m["threshold_source"] == "val"
    assert m["val_accuracy"] == 1.0 and m["n_val_pairs"] == 4
    assert m["accuracy"] == pytest.approx(0.625)
    assert (m["n_pairs"], m["n_ties"]) == (4, 1)
    assert m["nll"] is None and m["human_ceiling"] is None  # not defined by this protocol
    assert scorer.backbone.calls == 5  # val and test images scored together, once each
    fixed = evaluate(kit.make_scorer(), manifest, protocol="pickapic", threshold=0.0, n_resamples=50)
    # t = 0: (1,0) label 1 -> 0; (.4,.2) label 0 -> 1; (1,0) label 0 -> 1; (.2,.2) tie -> |d| = 0 -> tie -> 1
    assert fixed["accuracy"] == pytest.approx(0.75) and fixed["threshold_source"] == "given"


@pytest.fixture
def ranking_manifest(tmp_path, kit):
    # P1: scores (0.8, 0.4, 0.0), human ranks (1, 2, 3) -> 1
    # P2: scores (0.2, 0.2, 0.0), human ranks (2, 1, 3): the model's tie goes to the earlier image, so
    #     (0,1) is an inversion, the other two pairs agree -> 2/3;   HPD accuracy = (1 + 2/3) / 2 = 5/6
    img = tmp_path / "img"
    files = {"P1": [kit.solid(img, "a.png", 204), kit.solid(img, "b.png", 102), kit.solid(img, "c.png", 0)],
             "P2": [kit.solid(img, "d.png", 51), kit.solid(img, "e.png", 51), kit.solid(img, "f.png", 0)]}
    ranks = {"P1": [1, 2, 3], "P2": [2, 1, 3]}
    rows = []
    for g, names in files.items():
        r = ranks[g]
        for i, j in ((0, 1), (0, 2), (1, 2)):
            v = (1, 0, 0) if r[i] < r[j] else (0, 1, 0) if r[i] > r[j] else (0, 0, 1)
            rows.append(dict(image_0=f"img/{names[i]}", image_1=f"img/{names[j]}", votes_0=v[0], votes_1=v[1],
                             votes_tie=v[2], prompt=f"prompt {g}", group=g))
    return kit.write_manifest_csv(tmp_path / "rank.csv", rows)


def test_hpd_protocol(ranking_manifest, kit):
    m = evaluate(kit.make_scorer(), ranking_manifest, split="all", protocol="hpd", n_resamples=50)
    assert m["accuracy"] == pytest.approx(5 / 6)
    assert (m["n_pairs"], m["n_groups"], m["n_incomplete_groups"]) == (6, 2, 0)
    lo, hi = m["accuracy_ci"]
    assert 2 / 3 <= lo <= hi <= 1.0


def test_imagereward_protocol(ranking_manifest, kit):
    # pooled: P1 3/3, P2: (d,e) model tie -> wrong, 2 others right -> 5/6 pooled; per prompt (1 + 2/3) / 2
    m = evaluate(kit.make_scorer(), ranking_manifest, split="all", protocol="imagereward", n_resamples=50)
    assert m["averaging"] == "pooled"
    assert m["accuracy"] == pytest.approx(5 / 6)
    assert m["accuracy_per_prompt"] == pytest.approx(5 / 6)
    assert m["n_pairs"] == 6


def test_prompt_conditioned_scoring_dedupes_per_prompt(tmp_path, kit):
    import pandas as pd

    img = tmp_path / "img"
    a, b = str(img / kit.solid(img, "a.png", 51)), str(img / kit.solid(img, "b.png", 102))
    df = pd.DataFrame({"image_0": [a, a, a], "image_1": [b, b, b], "prompt": ["x", "xx", "x"]})
    scorer = kit.make_prompt_scorer()
    ps = score_pairs(scorer, df, batch_size=3)
    # score = red * len(prompt): prompt "x" -> 0.2, 0.4; prompt "xx" -> 0.4, 0.8
    assert ps.s0 == pytest.approx([0.2, 0.4, 0.2]) and ps.s1 == pytest.approx([0.4, 0.8, 0.4])
    assert scorer.backbone.calls == 4  # (a,x), (a,xx), (b,x), (b,xx)
    with pytest.raises(ValueError, match="needs prompts"):
        score_pairs(scorer, df.assign(prompt=["x", "", "x"]))


def test_unreadable_image_is_reported_and_skipped(votes_manifest, kit):
    (votes_manifest.parent / "img" / "e.png").write_bytes(b"not a png")
    m = evaluate(kit.make_scorer(), votes_manifest, n_resamples=50)
    assert m["n_skipped_pairs"] == 1 and m["n_pairs"] == 3
    assert m["image_errors"][0]["image"].endswith("e.png")


def test_parquet_manifest_with_embedded_images(tmp_path, kit):
    import io

    import pandas as pd
    from PIL import Image

    def png(red):
        buf = io.BytesIO()
        Image.new("RGB", (6, 6), (red, 40, 80)).save(buf, format="PNG")
        return buf.getvalue()

    # scores 0.8 / 0.4 vs 0 (the same bytes twice: scored once); majority 0 then 1 -> model right, then wrong
    df = pd.DataFrame({"image_0": [png(204), png(102)], "image_1": [png(0), png(0)], "votes_0": [3, 0],
                       "votes_1": [1, 4], "votes_tie": [0, 1], "prompt": ["a", "b"], "group": ["g", "h"],
                       "split": ["test", "test"]})
    path = tmp_path / "m.parquet"
    df.to_parquet(path)
    scorer = kit.make_scorer()
    m = evaluate(scorer, path, protocol="votes", n_resamples=20)
    assert m["accuracy"] == pytest.approx(0.5) and m["n_pairs"] == 2
    assert scorer.backbone.calls == 3
