"""explainer.effects: the citations against the cited lines of the original repositories, the agreement measure on
hand-made detections, and the live measurement on the course's detector."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from explainer import effects as E
from explainer.conventions import DETECTRON, DETECTRON2
from explainer.course import measured
from tests.conftest import load_golden

CITED = load_golden("effects/cited_lines.json")          # read from the repositories: tests/data/effects/README.md
LINES = {(c["repository"], c["file"], c["line"]): c for c in CITED["lines"]}


def _flat(text: str) -> str:
    """Line breaks, indentation and comment markers aside."""
    return " ".join(text.split())


def _cited_text(src: E.Source) -> str:
    repo, commit = (x.strip() for x in src.repository.split("@"))
    entry = LINES[(repo, src.file, src.line)]
    assert entry["commit"].startswith(commit), f"{src.where}: the golden was read at {entry['commit']}"
    return _flat(" ".join(line.strip().lstrip("#") for line in entry["text"]))


SOURCES = [(d.key, s) for d in E.DIFFERENCES for s in d.source]


@pytest.mark.parametrize("key,src", SOURCES, ids=[f"{k}:{s.file.rsplit('/', 1)[-1]}:{s.line}" for k, s in SOURCES])
def test_every_quote_stands_at_its_line_of_the_source(key, src):
    quote = _flat(src.quote)
    assert quote in _cited_text(src), f"{key}: {src}"
    repo = src.repository.split("@")[0].strip()
    first_line = _flat(LINES[(repo, src.file, src.line)]["text"][0].strip().lstrip("#"))
    assert " ".join(quote.split()[:2]) in first_line, f"{key}: the quote does not start on line {src.line}"


def test_every_golden_line_is_cited():
    cited = {(s.repository.split("@")[0].strip(), s.file, s.line) for _, s in SOURCES}
    assert cited == set(LINES)


@pytest.mark.parametrize("d", E.DIFFERENCES, ids=lambda d: d.key)
def test_every_published_number_is_in_the_cited_lines(d):
    # figures (decimals and numbers of three or more digits) in the published-effect column come from the sources
    cited = " ".join(_cited_text(s) for s in d.source)
    for number in re.findall(r"\d+\.\d+|\d{3,}", d.official_effect):
        assert number in cited, f"{d.key}: {number} is not in the cited lines"


@pytest.mark.parametrize("key,words,file", [
    # the figures the original authors published, as the issue of record lists them
    ("anchor_rounding", "They yield the same AP", "detectron2/modeling/anchor_generator.py"),
    ("anchor_offset", "The value is not expected to affect model accuracy", "detectron2/config/defaults.py"),
    ("roi_aligned", "does not significantly affect AP", E.COMPARISONS),
    ("sampling_ratio", "does not significantly affect AP", E.COMPARISONS),
    ("sampling_ratio", "<0.5", "examples/FasterRCNN/convert_d2/README.md"),
    ("post_nms_topk_train", "53.6", E.COMPARISONS),
    ("post_nms_topk_train", "53.1", E.COMPARISONS),
    ("post_nms_topk_train", "1500", "configs/Detectron1-Comparisons/keypoint_rcnn_R_50_FPN_1x.yaml"),
    ("mask_paste", "1 AP better in mask AP", E.COMPARISONS),
    ("mask_paste", "~0.5% absolute", E.COMPAT),
    ("legacy_plus_one", "negligible", E.COMPAT),
    ("roi_aligned", "negligible", E.COMPAT),
])
def test_the_published_figures_are_in_the_table_with_their_source(key, words, file):
    d = next(d for d in E.DIFFERENCES if d.key == key)
    assert words in d.official_effect
    assert any(s.file == file and words in _cited_text(s) for s in d.source)
    row = E.table_rows()[E.DIFFERENCES.index(d)]
    assert words in row[2] and any(f"{file}, l. {s.line}" in row[2] for s in d.source if s.file == file)


def test_practitioner_settings():
    for arch in E.ARCHITECTURES:
        config = E.practitioner_config(arch)
        # Detectron's __C.PIXEL_MEANS (detectron/core/config.py @ 04155a0), in BGR order
        assert config["MODEL.PIXEL_MEAN"] == [102.9801, 115.9465, 122.7717]
        assert config["MODEL.ANCHOR_GENERATOR.OFFSET"] == 0.5
        for head in ("BOX", "MASK", "KEYPOINT"):
            assert config[f"MODEL.ROI_{head}_HEAD.POOLER_TYPE"] == "ROIAlign"
    # what no config key sets (docs/notes/compatibility.md: the +1, the anchors' quantisation, the mask paste)
    assert [d.key for d in measured.remaining_differences()] == ["legacy_plus_one", "anchor_rounding", "mask_paste"]
    assert measured.remaining_differences(DETECTRON) == []
    assert E.PRACTITIONER.anchor_offset == DETECTRON.anchor_offset != DETECTRON2.anchor_offset


@pytest.mark.parametrize("arch,ratio", [
    # Detectron @ 04155a0: detectron/core/config.py sets FAST_RCNN, MRCNN and KRCNN.ROI_XFORM_SAMPLING_RATIO = 0, and
    # no R-50-C4 config of configs/12_2017_baselines sets it (e2e_mask_rcnn_R-50-C4_1x.yaml: RoIAlign, no ratio)
    ("C4", 0), ("c4", 0),
    # every FPN config there that pools sets ROI_XFORM_SAMPLING_RATIO: 2 (e2e_mask_rcnn_R-50-FPN_1x.yaml, l. 23 and 29)
    ("FPN", 2), (" fpn", 2),
])
def test_the_sampling_ratio_a_converted_model_needs_depends_on_its_architecture(arch, ratio):
    config = E.practitioner_config(arch)
    assert all(config[f"MODEL.ROI_{h}_HEAD.POOLER_SAMPLING_RATIO"] == ratio for h in ("BOX", "MASK", "KEYPOINT"))
    assert E.PRACTITIONER_CONFIGS[arch.strip().upper()] == config
    row = next(d for d in E.DIFFERENCES if d.key == "sampling_ratio")
    assert "= 0 by default" in row.detectron and "FPN configs set 2" in row.detectron


@pytest.mark.parametrize("bad", ["R-50", "", None, 4])
def test_practitioner_config_refuses_an_unknown_architecture(bad):
    with pytest.raises(ValueError, match="architecture"):
        E.practitioner_config(bad)


@pytest.mark.parametrize("d", E.DIFFERENCES, ids=lambda d: d.key)
def test_every_row_names_a_known_fingerprint_and_chapter(d):
    vocabulary, info = measured.fingerprint_info(d)
    assert vocabulary in ("detections", "stages") and info.meaning and info.fix
    assert re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", d.chapter)
    assert d.when in ("inference", "input", "training")


# --------------------------------------------------------------------------------------------------
# agreement on hand-made detections
# --------------------------------------------------------------------------------------------------
def _dets(boxes, labels, masks=None):
    out = {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels),
           "scores": torch.ones(len(boxes))}
    if masks is not None:
        out["masks"] = masks
    return out


def _box_mask(box, size=40):
    m = torch.zeros(size, size, dtype=torch.bool)
    x1, y1, x2, y2 = box
    m[y1:y2, x1:x2] = True
    return m


def test_agreement_counts_boxes_and_masks_apart():
    boxes = [[0, 0, 20, 20], [10, 10, 30, 40]]
    masks = torch.stack([_box_mask(b) for b in boxes])
    ref = _dets(boxes, [1, 2], masks)
    same = measured.reproduced(ref, _dets(boxes, [1, 2], masks.clone()))
    assert same["boxes"] == same["masks"] == same["mean_box_iou"] == same["mean_mask_iou"] == 1.0
    # the first box one pixel wider, its mask unchanged: IoU 400 / 420, box no longer reproduced, mask still is
    moved = measured.reproduced(ref, _dets([[0, 0, 21, 20], [10, 10, 30, 40]], [1, 2], masks.clone()))
    assert moved["boxes"] == 0.5 and moved["masks"] == 1.0
    assert moved["mean_box_iou"] == pytest.approx((400 / 420 + 1.0) / 2, abs=1e-6)
    # the same boxes with the second mask one row shorter: 580 / 600 pixels
    short = masks.clone()
    short[1, 39] = False
    cut = measured.reproduced(ref, _dets(boxes, [1, 2], short))
    assert cut["boxes"] == 1.0 and cut["masks"] == 0.5
    assert cut["mean_mask_iou"] == pytest.approx((1.0 + 580 / 600) / 2, abs=1e-6)
    # another label is another object
    relabelled = measured.reproduced(ref, _dets(boxes, [2, 1], masks.clone()))
    assert relabelled["boxes"] == relabelled["masks"] == 0.0
    empty = _dets(torch.zeros(0, 4).tolist(), [])
    assert measured.reproduced(empty, empty)["boxes"] == 1.0 and measured.reproduced(ref, empty)["boxes"] == 0.0


# --------------------------------------------------------------------------------------------------
# the live column on the course's detector
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def live():
    return measured.measure_on_course_detector()


def test_measurement_covers_every_row_it_can(live):
    expected = {d.key for d in E.DIFFERENCES if d.when != "training"} - {"keypoint_half_pixel", "retinanet"}
    assert set(live) == expected
    for key, m in live.items():
        for k in ("boxes", "masks", "mean_box_iou", "mean_mask_iou"):
            assert 0.0 <= m[k] <= 1.0, (key, k)
        assert m["detections"] > 0
    # every row but the resize starts from the same run: the converted detector under Detectron2's defaults
    assert len({m["recall"][0] for k, m in live.items() if k not in ("input_resize", "tv_resize")}) == 1


def _np_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of continuous-coordinate boxes, written here in numpy (independent of explainer.boxes)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def _np_reproduced(ref: dict, cand: dict, thr: float = 0.99) -> tuple:
    """Boxes reproduced (same label, IoU >= thr, one to one, the largest IoU first) and masks reproduced (among the
    pairs matched at IoU >= 0.5 the same way, mask IoU >= thr): counts, from plain numpy loops."""
    a, b = ref["boxes"].double().numpy(), cand["boxes"].double().numpy()
    same = ref["labels"].numpy()[:, None] == cand["labels"].numpy()[None, :]
    iou = np.where(same, _np_iou(a, b), 0.0) if len(a) and len(b) else np.zeros((len(a), len(b)))

    def pairs(t):
        order = sorted(((iou[i, j], i, j) for i in range(len(a)) for j in range(len(b)) if iou[i, j] >= t),
                       key=lambda x: (-x[0], x[1], x[2]))
        used_i, used_j, out = set(), set(), []
        for _, i, j in order:
            if i not in used_i and j not in used_j:
                used_i.add(i), used_j.add(j), out.append((i, j))
        return out

    boxes = len(pairs(thr))
    ma, mb = ref["masks"].numpy(), cand["masks"].numpy()
    masks = sum(1 for i, j in pairs(0.5)
                if ((ma[i] & mb[j]).sum() / max((ma[i] | mb[j]).sum(), 1) if (ma[i] | mb[j]).any() else 1.0) >= thr)
    return boxes, masks


@pytest.mark.parametrize("key", ["mask_paste", "sampling_ratio", "anchor_offset"])
def test_the_live_column_is_what_an_independent_count_gives(live, key):
    # the shares recomputed from the detector's own runs with a matcher written here: not only in range, but right
    from explainer.course.cache import N_TEST, run_scene

    knob = next(d.knob for d in E.DIFFERENCES if d.key == key)
    n = boxes = masks = 0
    for i in range(N_TEST):
        ref = run_scene(i, DETECTRON2, converted=True).detections
        cand = run_scene(i, DETECTRON2.replace(**{knob: getattr(DETECTRON, knob)}), converted=True).detections
        b, m = _np_reproduced(ref, cand)
        n, boxes, masks = n + len(ref["boxes"]), boxes + b, masks + m
    assert live[key]["detections"] == n
    assert live[key]["boxes"] == pytest.approx(boxes / n, abs=1e-12)
    assert live[key]["masks"] == pytest.approx(masks / n, abs=1e-12)


def test_measured_effects_behave_as_their_mechanism_says(live):
    # the paste acts after the boxes are final: every box reproduced, only masks change
    assert live["mask_paste"]["boxes"] == 1.0 and live["mask_paste"]["mean_box_iou"] == 1.0
    assert live["mask_paste"]["masks"] < 1.0
    # classes one row off: no detection is a correct one any more
    assert live["background_first"]["recall"][1] == 0.0
    # swapping the channels changes the input far more than a mean about one grey level away
    assert live["channel_order"]["mean_box_iou"] < live["pixel_mean"]["mean_box_iou"]
    # the training rows are not live; the table says so
    rows = dict((r[0], r[1]) for r in E.table_rows(live))
    assert all(rows[d.title].startswith("none: training only") for d in E.DIFFERENCES if d.when == "training")
    assert "keypoints" in rows[next(d.title for d in E.DIFFERENCES if d.key == "keypoint_half_pixel")]


def test_compare_settings_scores_the_practitioners_configuration():
    rows = {r["setting"]: r for r in measured.compare_settings()}
    original, defaults, practitioner, raw = rows.values()
    assert original["convention"] == DETECTRON and original["boxes"] == original["masks"] == 1.0
    # the converted-model settings bring the boxes closer to the original than Detectron2's defaults do
    assert practitioner["mean_box_iou"] > defaults["mean_box_iou"]
    assert practitioner["mean_mask_iou"] > defaults["mean_mask_iou"]
    # weights loaded without the class-row conversion find nothing
    assert raw["recall"] == 0.0


@pytest.mark.parametrize("scenes", [[], [99], [-1]])
def test_measure_rejects_bad_scene_indices(scenes):
    with pytest.raises(ValueError, match="scenes must be indices of the course's test scenes"):
        measured.measure_on_course_detector(scenes)


# --------------------------------------------------------------------------------------------------
# the published change in AP, and chapter 12's figure
# --------------------------------------------------------------------------------------------------
NOT_SIGNIFICANT = ("does not significantly affect AP", "negligible", "same AP", "not expected to affect")


@pytest.mark.parametrize("d", [d for d in E.DIFFERENCES if d.published_ap_change is not None], ids=lambda d: d.key)
def test_the_published_change_is_what_the_quote_says(d):
    if d.published_ap_change == 0.0:
        assert any(p in d.official_effect for p in NOT_SIGNIFICANT), d.key
    else:
        # a figure of the cited lines: "~0.5% absolute" (mask paste), box AP 53.6 against 53.1 (Keypoint R-CNN)
        cited = " ".join(_cited_text(s) for s in d.source)
        figures = {float(x) for x in re.findall(r"\d+\.\d+", cited)}
        assert d.published_ap_change in figures or any(
            round(a - b, 1) == d.published_ap_change for a in figures for b in figures), d.key


def test_published_values_are_the_sources():
    by_key = {d.key: d.published_ap_change for d in E.DIFFERENCES}
    assert by_key["mask_paste"] == 0.5 and by_key["post_nms_topk_train"] == 0.5
    assert {k for k, v in by_key.items() if v == 0.0} == {"legacy_plus_one", "anchor_offset", "anchor_rounding",
                                                          "roi_aligned", "sampling_ratio"}


def test_effect_points_put_the_measured_change_beside_the_published_one(live):
    pts = {p["key"]: p for p in measured.effect_points(live)}
    assert set(pts) == set(live)
    for key, p in pts.items():
        assert p["boxes_changed"] == pytest.approx(1.0 - live[key]["boxes"])
        assert p["masks_changed"] == pytest.approx(1.0 - live[key]["masks"])
    # the mask paste acts after the boxes are final: no box changes, and its published effect is "~0.5%" mask AP
    assert pts["mask_paste"]["boxes_changed"] == 0.0 and pts["mask_paste"]["published"] == 0.5
    # every difference published as not significant for trained models changes most of the converted boxes
    assert all(p["boxes_changed"] > 0.5 for p in pts.values() if p["published"] == 0.0)
    with pytest.raises(ValueError, match="measured"):
        measured.effect_points([1, 2])


def test_effects_figure_draws_one_point_pair_per_difference(live):
    import matplotlib

    matplotlib.use("Agg")
    from explainer.viz.effects import NO_FIGURE, effects_figure

    pts = measured.effect_points(live)
    fig = effects_figure(pts, num="test-effects")
    ax = fig.axes[0]
    assert len(ax.collections) == 2 * len(pts)                      # a circle (boxes) and a triangle (masks) each
    assert sorted(t.get_text() for t in ax.texts) == sorted(p["key"] for p in pts)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["boxes changed", "masks changed"]
    assert "AP points" in ax.get_xlabel() and "%" in ax.get_ylabel()
    assert NO_FIGURE in [t.get_text() for t in ax.get_xticklabels()]
    with pytest.raises(ValueError, match="points"):
        effects_figure([])


def test_a_reversed_mean_raises_precision_by_pruning_false_detections(live):
    # chapter 12's explanation, measured: the reversed PIXEL_MEAN reproduces almost no box, yet precision rises
    # because the detector emits fewer detections, and the ones it drops are false ones (counted against the scenes'
    # objects, independently of the precision computed from them)
    m = live["pixel_mean_order"]
    assert m["boxes"] < 0.1 and m["precision"][1] > m["precision"][0]
    assert m["detections_after"] < m["detections"] and m["false_detections"][1] < m["false_detections"][0]
    for k in (0, 1):
        n = m["detections"] if k == 0 else m["detections_after"]
        assert m["precision"][k] == pytest.approx((n - m["false_detections"][k]) / n)
