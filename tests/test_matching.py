"""The pieces under the diagnosis: batched box IoU, one-to-one matching, reading detections from memory, and
the table of injectable causes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from explainer import boxes as B
from explainer.diagnosis import matching as Mt
from explainer.diagnosis import report as Dx
from explainer.diagnosis.detections import ImageDetections, detections_from_json
from explainer.diagnosis.injection import INJECTIONS, inject


def random_boxes(g: torch.Generator, *shape: int, dtype=torch.float32) -> torch.Tensor:
    xy = torch.rand(*shape, 2, generator=g, dtype=torch.float64) * 200
    wh = 1 + torch.rand(*shape, 2, generator=g, dtype=torch.float64) * 80
    return torch.cat([xy, xy + wh], -1).to(dtype)


# ---------------------------------------------------------------------------------------------
# pairwise_iou over batches
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("legacy_plus_one", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batched_iou_is_the_per_image_iou(legacy_plus_one, dtype):
    g = torch.Generator().manual_seed(1)
    a, b = random_boxes(g, 5, 7, dtype=dtype), random_boxes(g, 5, 9, dtype=dtype)
    got = B.pairwise_iou(a, b, legacy_plus_one=legacy_plus_one)
    assert got.shape == (5, 7, 9) and got.dtype == dtype
    for i in range(5):
        assert torch.equal(got[i], B.pairwise_iou(a[i], b[i], legacy_plus_one=legacy_plus_one))


def test_batched_iou_agrees_with_torchvision_box_iou():
    torchvision = pytest.importorskip("torchvision")
    g = torch.Generator().manual_seed(2)
    a, b = random_boxes(g, 3, 20), random_boxes(g, 3, 30)
    got = B.pairwise_iou(a, b)
    for i in range(3):
        torch.testing.assert_close(got[i], torchvision.ops.box_iou(a[i], b[i]), rtol=1e-6, atol=1e-7)


def test_iou_dtypes_and_shapes():
    g = torch.Generator().manual_seed(3)
    a32, b64 = random_boxes(g, 2, 3), random_boxes(g, 2, 4, dtype=torch.float64)
    assert B.pairwise_iou(a32, b64).dtype == torch.float64          # promoted, as for N x 4 boxes
    assert B.pairwise_iou(a32.tolist(), a32.tolist()).dtype == torch.float32
    assert B.pairwise_iou([[0, 0, 10, 10]], [[5, 0, 15, 10]]).tolist() == [[pytest.approx(1 / 3)]]
    with pytest.raises(ValueError, match=r"batches with the same B; got shapes \(2, 3, 4\) and \(4, 4\)"):
        B.pairwise_iou(a32, b64[0])
    with pytest.raises(ValueError, match=r"got shapes \(2, 3, 4\) and \(1, 4, 4\)"):
        B.pairwise_iou(a32, b64[:1])
    with pytest.raises(ValueError, match=r"a must satisfy x2 >= x1"):
        B.pairwise_iou(a32.flip(-1), b64)


# ---------------------------------------------------------------------------------------------
# matching
# ---------------------------------------------------------------------------------------------
def test_match_boxes_pairs_each_image_as_greedy_match_does():
    # the batched matching over a sorted index gives, image by image, the pairs of explainer.boxes.greedy_match
    # over the full IoU matrix (both in float64: IoUs rank the same)
    g = torch.Generator().manual_seed(4)
    ref = [random_boxes(g, n, dtype=torch.float64) for n in (6, 0, 9, 40)]
    cand = ([r + torch.randn(r.shape, generator=g, dtype=torch.float64) * 3 for r in ref[:2]] + [random_boxes(g, 4)]
            + [ref[3][torch.randperm(40, generator=g)] + torch.randn(40, 4, generator=g, dtype=torch.float64) * 6])
    cand = [torch.cat([c[:, :2], torch.maximum(c[:, 2:], c[:, :2])], 1) for c in cand]
    image, ri, ci, iou = Mt.match_boxes(ref, cand)
    for i in range(4):
        if not len(ref[i]) or not len(cand[i]):
            assert not (image == i).any()
            continue
        rows, cols, vals = B.greedy_match(B.pairwise_iou(ref[i], cand[i]), Mt.MATCH_IOU)
        here = image == i
        want = sorted(zip(rows.tolist(), cols.tolist(), vals.tolist()))
        got = sorted(zip(ri[here].tolist(), ci[here].tolist(), iou[here].tolist()))
        assert [w[:2] for w in want] == [x[:2] for x in got], i
        assert [x[2] for x in got] == pytest.approx([w[2] for w in want], rel=1e-12)
    assert len(image) > 20  # the crowded image gave pairs to compare


@pytest.mark.parametrize("seed", range(5))
def test_sorted_index_matching_equals_the_full_matrix_on_crowded_images(seed):
    # many boxes of every size piled up, ties included: the windowed candidates miss no pair with IoU >= 0.5
    g = torch.Generator().manual_seed(100 + seed)
    ref = [random_boxes(g, int(n), dtype=torch.float64) for n in torch.randint(0, 60, (6,), generator=g)]
    cand = [torch.cat([r[: len(r) // 2], r[: len(r) // 3] + torch.randn(len(r) // 3, 4, generator=g, dtype=torch.float64)
                       .clamp(-2, 2)]) for r in ref]
    cand = [torch.cat([c[:, :2], torch.maximum(c[:, 2:], c[:, :2])], 1) for c in cand]
    image, ri, ci, _ = Mt.match_boxes(ref, cand)
    for i in range(len(ref)):
        if not len(ref[i]) or not len(cand[i]):
            continue
        rows, cols, _ = B.greedy_match(B.pairwise_iou(ref[i], cand[i]), Mt.MATCH_IOU)
        here = image == i
        assert sorted(zip(ri[here].tolist(), ci[here].tolist())) == sorted(zip(rows.tolist(), cols.tolist()))


def test_pair_iou_is_scale_free_and_agrees_with_torchvision():
    torchvision = pytest.importorskip("torchvision")
    g = torch.Generator().manual_seed(7)
    a, b = random_boxes(g, 50, dtype=torch.float64), random_boxes(g, 50, dtype=torch.float64)
    torch.testing.assert_close(Mt.pair_iou(a, b), torchvision.ops.box_iou(a, b).diagonal(), rtol=1e-12, atol=1e-15)
    for s in (1e20, 1e155, 1e300):  # areas overflow float64 beyond ~1e154: the IoU does not change
        torch.testing.assert_close(Mt.pair_iou(a * s, b * s), Mt.pair_iou(a, b), rtol=1e-9, atol=1e-12)
    flat = torch.tensor([[5.0, 5.0, 5.0, 9.0], [1.0, 1.0, 1.0, 1.0]], dtype=torch.float64)
    assert Mt.pair_iou(flat, flat).tolist() == [1.0, 1.0]  # an empty box is itself
    assert Mt.pair_iou(flat, flat + 0.5).tolist() == [0.0, 0.0]


def test_lex_order_and_grouped_counts_agree_with_numpy():
    rng = np.random.default_rng(0)
    g = rng.integers(0, 5, 300)
    v = rng.choice([0.5, 1.0, 2.5, -1.0, 1e300], 300)
    order = Mt.lex_order(g, v)
    assert np.array_equal(np.stack([g, v], 1)[order], np.stack([g, v], 1)[np.lexsort((v, g))])
    items = np.lexsort((v, g))
    qg, qv = rng.integers(0, 6, 50), rng.choice([0.5, 1.0, 2.0, 1e300, -5.0], 50)
    strict, incl = Mt.count_before(torch.from_numpy(g[items]), torch.from_numpy(v[items]), torch.from_numpy(qg),
                                  torch.from_numpy(np.stack([qv, qv], 1)), inclusive=(False, True))
    for k in range(50):
        assert strict[k] == int(((g < qg[k]) | ((g == qg[k]) & (v < qv[k]))).sum())
        assert incl[k] == int(((g < qg[k]) | ((g == qg[k]) & (v <= qv[k]))).sum())


def test_score_rank_within_each_image():
    scores = torch.tensor([0.5, 0.9, 0.5, 0.1, 0.7, 0.7], dtype=torch.float64)
    image = torch.tensor([0, 0, 0, 1, 1, 1])
    assert Mt.score_rank(scores, image).tolist() == [1, 0, 2, 2, 0, 1]  # ties in row order


def test_boxes_turned_inside_out_by_a_hypothesis_match_nothing():
    # xyxy read as xywh from boxes left of the origin: x2' = x1 + x2 < x1
    ref = torch.tensor([[-30.0, -20.0, -10.0, -5.0], [0.0, 0.0, 10.0, 10.0]], dtype=torch.float64)
    _, ri, ci, _ = Mt.match_boxes([Mt.xyxy_read_as_xywh(ref)], [ref])
    assert ri.tolist() == [1] and ci.tolist() == [1]


def test_residual_levels_follow_detectron2s_rule():
    # sides of 100, 112, 223.9, 224, 500 px: levels 2, 3, 3, 4, 5 (floor(4 + log2(side / 224)), clamped to 2..5)
    sides = torch.tensor([100.0, 112.0, 223.9, 224.0, 500.0], dtype=torch.float64)
    boxes = torch.stack([torch.zeros(5), torch.zeros(5), sides, sides], 1).double()
    pairs = {"ref_boxes": boxes, "cand_boxes": boxes + 1, "image": torch.zeros(5, dtype=torch.long)}
    res = Mt.residuals(pairs)
    assert res["level"].tolist() == [2, 3, 3, 4, 5]
    assert res["size"].tolist() == sides.tolist() and res["dx2"].tolist() == [1.0] * 5


# ---------------------------------------------------------------------------------------------
# reading uploaded content
# ---------------------------------------------------------------------------------------------
def test_detections_from_json_reads_bytes_and_names_the_input():
    entry = {"image_id": 7, "category_id": 2, "bbox": [1, 2, 3, 4], "score": 0.5}
    d = detections_from_json(json.dumps([entry]).encode(), name="upload.json")
    assert d.source == "upload.json" and d.images[7].boxes.tolist() == [[1.0, 2.0, 4.0, 6.0]]
    assert detections_from_json(memoryview(json.dumps([entry]).encode()), name="x").n == 1
    with pytest.raises(ValueError, match=r"upload\.json: not valid JSON \(line 1, column 3"):
        detections_from_json(b"[{", name="upload.json")
    with pytest.raises(ValueError, match=r"upload\.json: not a UTF-8 text file"):
        detections_from_json(b"\xff\xfe\x00", name="upload.json")
    with pytest.raises(ValueError, match=r"upload\.json: holds a JSON string"):
        detections_from_json(json.dumps("/etc/hostname").encode(), name="upload.json")


# ---------------------------------------------------------------------------------------------
# injecting causes
# ---------------------------------------------------------------------------------------------
def test_every_mistake_of_the_vocabulary_is_injectable():
    comparisons = {"identical", "no_detections", "unrelated", "inference_difference"}
    assert list(INJECTIONS) == [c for c in Dx.CAUSES if c not in comparisons]


def test_inject_leaves_its_input_alone_and_checks_its_parameters():
    boxes = np.array([[10.0, 10.0, 50.0, 40.0], [60.0, 5.0, 90.0, 35.0]])
    side = {0: {"boxes": boxes.copy(), "scores": np.array([0.9, 0.4]), "labels": np.array([1, 2]),
                "keypoints": np.ones((2, 3, 3))}}
    dets = Dx.load_detections(side)
    before = dets.images[0].boxes.clone()
    out = inject(dets, "translation", dx=3.0)
    assert torch.equal(dets.images[0].boxes, before)
    assert out.images[0].boxes.tolist() == (before + torch.tensor([3.0, 8.0, 3.0, 8.0], dtype=torch.float64)).tolist()
    assert inject(dets, "threshold_or_topk", topk=1).images[0].scores.tolist() == [0.9]
    assert inject(dets, "label_permutation", mapping={1: 2, 2: 1}).images[0].labels.tolist() == [2, 1]
    assert inject(dets, "flip_off_by_one").images[0].keypoints[..., 0].tolist() == [[0.0] * 3] * 2
    with pytest.raises(ValueError, match=r"translation takes \['dx', 'dy'\]; unknown: \['dz'\]"):
        inject(dets, "translation", dz=1.0)
    with pytest.raises(ValueError, match=r"dx must be a finite number"):
        inject(dets, "translation", dx=float("nan"))
    with pytest.raises(ValueError, match=r"mapping must be a dict of integer labels"):
        inject(dets, "label_permutation", mapping=[1, 2])
    with pytest.raises(ValueError, match=r"mask_paste needs masks; image 0 has none"):
        inject(dets, "mask_paste")
    with pytest.raises(ValueError, match=r"cause must be one of plus_one, half_pixel_shift"):
        inject(dets, "identical")
    assert len(ImageDetections.empty()) == 0


def test_dicts_of_arrays_per_image_are_read_as_one_stack_alike():
    # the stacked reading of {image: {"boxes", "scores", "labels"}} gives what reading image by image gives, and
    # anything it does not take (a list, an inverted box, a fractional label) is read image by image, named
    from explainer.diagnosis.detections import _from_dict, _images_fast, load_detections

    rng = np.random.default_rng(4)
    side = {}
    for k in (7, "a", 3):
        n = int(rng.integers(0, 6))
        xy = rng.uniform(0, 50, (n, 2))
        side[k] = {"boxes": np.concatenate([xy, xy + rng.uniform(0, 9, (n, 2))], 1).astype(np.float32),
                   "scores": torch.rand(n, dtype=torch.float64), "labels": rng.integers(0, 80, n)}
    side[7]["boxes"] = side[7]["boxes"].reshape(-1, 4)
    fast = _images_fast(side)
    assert fast is not None and fast.image_ids == [7, "a", 3]
    for k, d in zip(side, load_detections(side).images.values()):
        want = _from_dict(side[k], "x")
        assert torch.equal(d.boxes, want.boxes) and torch.equal(d.scores, want.scores)
        assert torch.equal(d.labels, want.labels) and d.labels.dtype == torch.long
    bad = {**side, 3: {**side[3], "labels": np.r_[side[3]["labels"][:-1], 1.5] if len(side[3]["labels"]) else [1.5]}}
    bad[3]["boxes"] = np.array([[0.0, 0, 1, 1]] * len(bad[3]["labels"]))
    bad[3]["scores"] = np.ones(len(bad[3]["labels"]))
    assert _images_fast(bad) is None
    with pytest.raises(ValueError, match=r"image 3: field 'labels' must be whole numbers"):
        load_detections(bad)
    inverted = {**side, "a": {"boxes": np.array([[5.0, 5, 4, 9]]), "scores": np.ones(1), "labels": np.ones(1)}}
    with pytest.raises(ValueError, match=r"image 'a': field 'boxes' row 0 has a negative width"):
        load_detections(inverted)
    short = {**side, "a": {"boxes": np.array([[1.0, 1, 4, 9]]), "scores": np.ones(2), "labels": np.ones(1)}}
    with pytest.raises(ValueError, match=r"image 'a': field 'scores' has 2 values for 1 boxes"):
        load_detections(short)
    assert _images_fast({1: {"boxes": [[0, 0, 1, 1]]}}) is None and _images_fast({1: {"boxes": np.ones((1, 4), bool)}}) is None
