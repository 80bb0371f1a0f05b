"""Chapter 5: class-label order in logits, labels and predictor weights."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from explainer import labels as L
from tests.conftest import load_golden

G = load_golden("labels/label_reorder.json")
INPUTS = {k: torch.tensor(v) for k, v in G["inputs"].items()}


def test_conversion_equals_detectron2_loader():
    out = L.convert_box_predictor(INPUTS)
    assert set(out) == set(G["outputs"])
    for k, v in G["outputs"].items():
        assert torch.equal(out[k], torch.tensor(v)), k
        assert list(out[k].shape) == G["output_shapes"][k]


def test_class_agnostic_box_regression_matches_loader():
    ex = G["class_agnostic_example"]
    params = dict(INPUTS)
    params["bbox_pred_w"], params["bbox_pred_b"] = INPUTS["bbox_pred_w"][:8], INPUTS["bbox_pred_b"][:8]
    params.pop("mask_fcn_logits_w"), params.pop("mask_fcn_logits_b")
    out = L.convert_box_predictor(params)
    assert torch.equal(out["bbox_pred.weight"], torch.tensor(ex["outputs"]["bbox_pred.weight"]))
    assert torch.equal(out["bbox_pred.bias"], torch.tensor(ex["outputs"]["bbox_pred.bias"]))


def test_class_agnostic_mask_is_kept_where_detectron2s_loader_cuts_it_to_nothing():
    # Detectron2's loader cuts such a head to 0 channels (golden from the original loader: [0, 4, 1, 1])
    ex = G["class_agnostic_example"]
    assert ex["output_shapes"]["mask_head.predictor.weight"][0] == 0
    params = dict(INPUTS)
    w, b = INPUTS["mask_fcn_logits_w"][:1], INPUTS["mask_fcn_logits_b"][:1]
    params["mask_fcn_logits_w"], params["mask_fcn_logits_b"] = w, b
    out = L.convert_box_predictor(params)
    # kept as it is, for a Detectron2 head with CLS_AGNOSTIC_MASK
    assert torch.equal(out["mask_head.predictor.weight"], w) and torch.equal(out["mask_head.predictor.bias"], b)
    # what Detectron2's own loader leaves in the model: w[1:] has 0 channels, the shapes differ, nothing is loaded
    got = L.detectron2_loads_mask_predictor(w, b, model_channels=1)
    assert list(got["checkpoint_shape"]) == ex["output_shapes"]["mask_head.predictor.weight"]
    assert got["loaded"] is False and got["model_shape"] == (1, w.shape[1], 1, 1)
    assert "will not be loaded" in got["warning"] and "torch.Size([0, 4, 1, 1])" in got["warning"]
    assert got["weight"].shape == (1, w.shape[1], 1, 1) and not torch.equal(got["weight"], w)
    assert float(got["weight"].abs().max()) < 0.01 and torch.equal(got["bias"], torch.zeros(1))  # std 0.001, bias 0
    # a class-specific head (K + 1 channels) does load into a K-channel predictor
    k1 = INPUTS["mask_fcn_logits_w"]
    ok = L.detectron2_loads_mask_predictor(k1, INPUTS["mask_fcn_logits_b"], model_channels=k1.shape[0] - 1)
    assert ok["loaded"] and torch.equal(ok["weight"], torch.tensor(G["outputs"]["mask_head.predictor.weight"]))
    with pytest.raises(ValueError, match="weight must be channels x C x 1 x 1"):
        L.detectron2_loads_mask_predictor(torch.zeros(2, 3), torch.zeros(2), 1)


def test_softmax_equivalence_golden():
    se = G["softmax_equivalence"]
    p = torch.tensor(se["detectron_probs_[bg,c1,c2,c3]"])
    assert torch.equal(L.background_first_to_last(p), torch.tensor(se["d2_probs_[c1,c2,c3,bg]"]))


@given(st.integers(1, 20), st.integers(1, 8), st.integers(0, 10_000))
def test_softmax_is_the_same_vector_rolled(k, d, seed):
    g = torch.Generator().manual_seed(seed)
    w, b, x = torch.randn(k + 1, d, generator=g), torch.randn(k + 1, generator=g), torch.randn(5, d, generator=g)
    w2, b2 = L.background_first_to_last(w, 0), L.background_first_to_last(b, 0)
    p1 = torch.softmax(x @ w.t() + b, -1)
    p2 = torch.softmax(x @ w2.t() + b2, -1)
    torch.testing.assert_close(torch.roll(p1, -1, dims=-1), p2)
    torch.testing.assert_close(L.background_last_to_first(p2), p1)


@given(st.integers(1, 30), st.integers(0, 10_000), st.sampled_from(["copy", "zeros"]))
def test_round_trips(k, seed, fill):
    g = torch.Generator().manual_seed(seed)
    det = {"cls_score_w": torch.randn(k + 1, 3, generator=g), "cls_score_b": torch.randn(k + 1, generator=g),
           "bbox_pred_w": torch.randn(4 * (k + 1), 3, generator=g), "bbox_pred_b": torch.randn(4 * (k + 1), generator=g),
           "mask_fcn_logits_w": torch.randn(k + 1, 2, 1, 1, generator=g), "mask_fcn_logits_b": torch.randn(k + 1, generator=g)}
    d2 = L.convert_box_predictor(det)
    back = L.convert_box_predictor(d2, background_first=True, bg_box_rows=fill)
    for key in ("cls_score_w", "cls_score_b"):
        assert torch.equal(back[key], det[key])
    assert torch.equal(back["bbox_pred_w"][4:], det["bbox_pred_w"][4:])  # foreground rows survive exactly
    assert torch.equal(back["mask_fcn_logits_w"][1:], det["mask_fcn_logits_w"][1:])
    again = L.convert_box_predictor(back)  # the re-inserted background rows are what the loader drops
    assert set(again) == set(d2) and all(torch.equal(again[key], d2[key]) for key in d2)
    labels = torch.arange(k + 1)
    assert torch.equal(L.d2_to_detectron_labels(L.detectron_to_d2_labels(labels, k), k), labels)


def test_label_maps_by_hand():
    # Detectron: 0 = bg, 1..3 ; Detectron2: 0..2, 3 = bg
    assert L.detectron_to_d2_labels([0, 1, 2, 3], 3).tolist() == [3, 0, 1, 2]
    assert L.d2_to_detectron_labels([0, 1, 2, 3], 3).tolist() == [1, 2, 3, 0]


def test_guess_class_order_from_shapes_and_bias():
    assert L.guess_class_order(INPUTS)["layout"] == "detectron"
    d2 = L.convert_box_predictor(INPUTS)
    got = L.guess_class_order({f"roi_heads.box_predictor.{k}": v for k, v in d2.items()})
    assert got["layout"] == "detectron2" and got["K"] == 3
    # class-agnostic Detectron2 regression has 4 rows: shapes decide
    agnostic = {"cls_score.weight": torch.zeros(4, 2), "cls_score.bias": torch.zeros(4),
                "bbox_pred.weight": torch.zeros(4, 2), "bbox_pred.bias": torch.zeros(4)}
    assert L.guess_class_order(agnostic)["layout"] == "detectron2"
    # K = 2 with 8 box rows and no mask head: Detectron2 class-specific or Detectron class-agnostic
    ambiguous = {"cls_score_w": torch.zeros(3, 2), "cls_score_b": torch.tensor([0.1, 0.2, 0.1]),
                 "bbox_pred_w": torch.zeros(8, 2), "bbox_pred_b": torch.zeros(8)}
    got = L.guess_class_order(ambiguous)
    assert got["layout"] == "cannot tell" and any("cannot tell" in e for e in got["evidence"])
    ambiguous["cls_score_b"] = torch.tensor([3.0, 0.2, 0.1])  # a trained background prior at row 0
    got = L.guess_class_order(ambiguous)
    assert got["layout"] == "detectron" and any("weak" in e for e in got["evidence"])


def test_coco_ids():
    assert len(L.COCO_CATEGORY_IDS) == 80 == len(set(L.COCO_CATEGORY_IDS)) == len(L.COCO_CLASS_NAMES)
    assert L.coco_id_to_contiguous([1, 13, 90]).tolist() == [0, 11, 79]  # 12 is a gap: id 13 is label 11
    assert torch.equal(L.contiguous_to_coco_id(L.coco_id_to_contiguous(L.COCO_CATEGORY_IDS)), torch.tensor(L.COCO_CATEGORY_IDS))
    with pytest.raises(ValueError, match="COCO category ids"):
        L.coco_id_to_contiguous([12])


def test_trained_head_three_ways():
    x, y = L.synthetic_region_features(num_classes=4, per_class=100, seed=1)
    w, b = L.train_box_classifier(x, y, 5, steps=150)
    y2 = L.detectron_to_d2_labels(y, 4)
    pred = {m: torch.argmax(x @ L.load_into_background_last_head(w, b, m)[0].t() + L.load_into_background_last_head(w, b, m)[1], 1)
            for m in ("converted", "naive", "num_classes_off_by_one")}
    acc = {m: (p == y2).float().mean().item() for m, p in pred.items()}
    assert acc["converted"] > 0.9
    # naive: every object reads as its neighbouring class (k -> k-1) and background as class 0
    fg = y > 0
    assert (pred["naive"][fg] == y2[fg] + 1).float().mean() > 0.9
    assert (pred["naive"][~fg] == 0).float().mean() > 0.9
    assert acc["num_classes_off_by_one"] < 0.6
    cm = L.confusion_matrix(pred["converted"], y2, 5)
    assert cm.sum() == len(y) and torch.trace(cm) == (pred["converted"] == y2).sum()


@pytest.mark.parametrize("params, needle", [
    ({"cls_score_w": torch.zeros(4, 2), "cls_score_b": torch.zeros(4), "bbox_pred_w": torch.zeros(12, 2), "bbox_pred_b": torch.zeros(12)},
     "bbox_pred_w has 12 rows"),
    ({"cls_score_w": torch.zeros(4, 2), "cls_score_b": torch.zeros(4), "bbox_pred_w": torch.zeros(16, 2)}, "missing 'bbox_pred_b'"),
    ({"cls_score_w": torch.zeros(1, 2), "cls_score_b": torch.zeros(1), "bbox_pred_w": torch.zeros(4, 2), "bbox_pred_b": torch.zeros(4)},
     "K >= 1"),
    ({"cls_score_w": torch.zeros(4, 2), "cls_score_b": torch.zeros(4), "bbox_pred_w": torch.zeros(16, 2), "bbox_pred_b": torch.zeros(16),
      "mask_fcn_logits_w": torch.zeros(3, 2, 1, 1), "mask_fcn_logits_b": torch.zeros(3)}, "K+1 = 4 channels"),
])
def test_bad_predictors_name_parameter_and_shapes(params, needle):
    with pytest.raises(ValueError) as e:
        L.convert_box_predictor(params)
    assert needle in str(e.value)


def test_reverse_direction_checks_shapes():
    with pytest.raises(ValueError, match="expected 4K = 12"):
        L.convert_box_predictor({"cls_score.weight": torch.zeros(4, 2), "cls_score.bias": torch.zeros(4),
                                 "bbox_pred.weight": torch.zeros(16, 2), "bbox_pred.bias": torch.zeros(16)}, background_first=True)
    with pytest.raises(ValueError, match="background_first must be True or False"):
        L.convert_box_predictor(INPUTS, background_first="detectron")  # a side is a boolean, never a string


@pytest.mark.parametrize("steps, lr, seed", [(1, 0.5, 0), (40, 0.5, 0), (25, 0.1, 3)])
def test_the_classifier_takes_the_steps_of_torch_sgd_with_momentum(steps, lr, seed):
    """Bit for bit the parameters torch.optim.SGD(momentum=0.9) reaches from the same start."""
    x, y = L.synthetic_region_features(num_classes=4, per_class=15, dim=6, seed=seed)
    n_out = int(y.max()) + 1
    g = torch.Generator().manual_seed(seed)
    w = (torch.randn(n_out, x.shape[1], generator=g) * 0.01).requires_grad_()
    b = torch.zeros(n_out, requires_grad=True)
    opt = torch.optim.SGD([w, b], lr=lr, momentum=0.9)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(x @ w.t() + b, y).backward()
        opt.step()
    got_w, got_b = L.train_box_classifier(x, y, n_out, steps=steps, lr=lr, seed=seed)
    assert torch.equal(got_w, w.detach()) and torch.equal(got_b, b.detach())
