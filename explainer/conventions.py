"""The knobs that differ between Detectron (Caffe2, 2018), Detectron2 and torchvision's detectors, and the presets.

Every operation of the package that behaves differently in the two codebases takes the
relevant knob as a keyword argument named after the flag a user meets in a config or an
operator (``legacy_plus_one``, ``aligned``, ``offset``, ...). :class:`Convention` bundles
all of them so that a whole pipeline can be switched at once, or one knob at a time::

    from explainer.conventions import DETECTRON, DETECTRON2
    conv = DETECTRON2.replace(roi_aligned=False)   # Detectron2 with the legacy ROIAlign
    DETECTRON2.diff(DETECTRON)                     # the knobs that differ, by name
    roi_align(x, rois, 7, **conv.operator_flags("aligned", "sampling_ratio"))   # explainer.roi_align

One name per knob in each layer: a :class:`Convention` field carries the configuration's name, qualified where a
bare flag would be ambiguous inside the bundle (``roi_aligned``, ``anchor_offset``, ``hflip_minus_one``); an
operator takes its own flag (``aligned``, ``offset``, ``minus_one``). :data:`OPERATOR_FLAGS` is the one mapping
between the two, as Detectron2's ``from_config`` maps a config to an operator's arguments.

Where each default comes from (file paths are in the original repositories):

========================  =====================================  ======================================
knob                      Detectron                              Detectron2
========================  =====================================  ======================================
legacy_plus_one           True: widths are x2 - x1 + 1           False (its Caffe2 export passes False)
                          (``utils/boxes.py``)                   (``structures/boxes.py``)
anchor_offset             0.5: centres at (stride - 1) / 2 in    0.0: ``MODEL.ANCHOR_GENERATOR.OFFSET``
                          pixel indices = half a stride in
                          continuous coordinates
anchor_rounding           True: ``np.round`` in ``_ratio_enum``  False: exact sizes
anchor_order              "ratio_major"                          "size_major"
roi_aligned               False: ``ROIAlign`` (no -0.5 shift)    True: ``POOLER_TYPE: ROIAlignV2``
sampling_ratio            2: the FPN configs' value (their       0 (``POOLER_SAMPLING_RATIO``:
                          ``ROI_XFORM_SAMPLING_RATIO: 2``);      adaptive)
                          ``core/config.py``'s default is 0,
                          which the C4 configs keep
background_first          True: label 0 is background            False: label K is background
mask_paste                "segm_results" (``core/test.py``)      "paste_masks_in_image"
                                                                 (``layers/mask_ops.py``)
post_nms_topk_per_image   False: per batch in training with      True (``find_top_rpn_proposals``)
                          FPN (C4's GenerateProposals counts
                          per image)
post_nms_topk_train       2000                                   1000 (``Base-RCNN-FPN.yaml``)
rpn_smooth_l1_beta        1/9                                    0.0 (``MODEL.RPN.SMOOTH_L1_BETA``: L1)
box_smooth_l1_beta        1.0                                    0.0 (``ROI_BOX_HEAD.SMOOTH_L1_BETA``)
keypoint_half_pixel       False: annotations stay pixel          True: +0.5 on load, -0.5 on export
                          indices; decoding adds 0.5 and the
                          writer keeps it
hflip_minus_one           True: x -> W - x - 1                   False: x -> W - x
anchor_round_corners      False                                  False
input_format              "BGR" (``cv2.imread``)                 "BGR": ``INPUT.FORMAT``
input_scale               255.0 (uint8 values)                   255.0
image_mean                PIXEL_MEANS [102.9801, 115.9465,       MODEL.PIXEL_MEAN [103.530, 116.280,
                          122.7717]                              123.675]
image_std                 (1, 1, 1): none                        MODEL.PIXEL_STD [1, 1, 1]
resize                    "prep_im_for_blob" (``utils/blob.py``) "ResizeShortestEdge"
========================  =====================================  ======================================

:data:`TORCHVISION` is the third preset: ``torchvision.models.detection`` (0.29), read at the source. Where its way
is one the knobs above already name, it takes that value (``legacy_plus_one=False``, ``roi_aligned=False`` with
``sampling_ratio=2`` as in Detectron, ``background_first=True``, ``mask_paste="segm_results"``: Detectron's paste on
continuous boxes, ``rpn_smooth_l1_beta`` and ``box_smooth_l1_beta`` 1/9). The last six knobs exist for what no other
knob expresses: ``AnchorGenerator`` rounds the anchors' corners (``anchor_round_corners``), and
``GeneralizedRCNNTransform`` takes RGB in [0, 1] normalised by ImageNet's ``image_mean`` and ``image_std`` and
resizes with ``F.interpolate``. Box coding (weights and ``bbox_xform_clip``) and ``size_divisible`` (32 with FPN) are
the same in all three and have no knob. :mod:`explainer.torchvision_way` computes each step.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from typing import Any, Dict, Tuple

__all__ = ["Convention", "DETECTRON", "DETECTRON2", "TORCHVISION", "PRESETS", "get_convention", "check_convention", "KNOB_DOCS",
           "OPERATOR_FLAGS", "MASK_PASTES", "RESIZES", "INPUT_FORMATS"]

_ANCHOR_ORDERS = ("ratio_major", "size_major")
#: The two ways of pasting a mask, named after the functions that do it: Detectron's ``core/test.py:segm_results``
#: and Detectron2's ``layers/mask_ops.py:paste_masks_in_image``.
MASK_PASTES = ("segm_results", "paste_masks_in_image")
#: The three test-time resizes, named after the functions that do them: Detectron's ``utils/blob.py:prep_im_for_blob``
#: (OpenCV, scale ``fx``), Detectron2's ``ResizeShortestEdge`` (PIL on uint8) and torchvision's
#: ``GeneralizedRCNNTransform`` (``F.interpolate`` on the normalised float image).
RESIZES = ("prep_im_for_blob", "ResizeShortestEdge", "GeneralizedRCNNTransform")
#: The channel order of the image a model takes (Detectron2's ``INPUT.FORMAT``).
INPUT_FORMATS = ("BGR", "RGB")

#: The one join between the two layers' names: an operator's own keyword argument (the name a function of this
#: package takes, as the real operator does) -> the :class:`Convention` knob (the configuration's name) that feeds
#: it. Where the names are the same, the operator reads the config's name unchanged.
OPERATOR_FLAGS: Dict[str, str] = {
    "legacy_plus_one": "legacy_plus_one",   # Caffe2 operators' legacy_plus_one
    "aligned": "roi_aligned",               # ROIAlign(aligned=...); POOLER_TYPE ROIAlignV2 is True
    "sampling_ratio": "sampling_ratio",     # ROIAlign(sampling_ratio=...); POOLER_SAMPLING_RATIO
    "offset": "anchor_offset",              # DefaultAnchorGenerator(offset=...); MODEL.ANCHOR_GENERATOR.OFFSET
    "minus_one": "hflip_minus_one",         # the flip rule x -> W - x - 1 (explainer.pixels.flip_x)
}

#: One sentence per knob: what it changes and where a user meets it.
KNOB_DOCS: Dict[str, str] = {
    "legacy_plus_one": "box width is x2 - x1 + 1 (Caffe2 ops' legacy_plus_one); clip to W-1; NMS suppresses at IoU >= t; "
                       "ROIAlign pools the inclusive box as if it were continuous",
    "anchor_offset": "MODEL.ANCHOR_GENERATOR.OFFSET (the generator's offset argument): first anchor centre at "
                     "offset*stride (continuous coordinates)",
    "anchor_rounding": "round anchor widths/heights to whole pixels (Detectron's np.round in _ratio_enum)",
    "anchor_order": "row order of the cell anchors: ratio-major (Detectron) or size-major (Detectron2)",
    "roi_aligned": "ROIAlign's aligned argument: True shifts boxes by -0.5 after scaling (POOLER_TYPE ROIAlignV2)",
    "sampling_ratio": "ROIAlign samples per bin side; 0 means adaptive ceil(roi/output) (POOLER_SAMPLING_RATIO)",
    "background_first": "class label 0 is background (Detectron) instead of label K (Detectron2)",
    "mask_paste": "how a 28x28 mask is pasted into the image: 'segm_results' (Detectron) or 'paste_masks_in_image' (Detectron2)",
    "post_nms_topk_per_image": "RPN.POST_NMS_TOPK_TRAIN counted per image (Detectron2) or per batch (Detectron's FPN "
                               "training; its C4 models count per image)",
    "post_nms_topk_train": "MODEL.RPN.POST_NMS_TOPK_TRAIN",
    "rpn_smooth_l1_beta": "MODEL.RPN.SMOOTH_L1_BETA (0 means L1)",
    "box_smooth_l1_beta": "MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA (0 means L1)",
    "keypoint_half_pixel": "keypoint annotations become continuous coordinates (+0.5 on load) and results get -0.5 on "
                           "export; both decoders add 0.5, so without it exported keypoints are 0.5 px further",
    "hflip_minus_one": "horizontal flip maps x to W - x - 1 (pixel indices) instead of W - x (coordinates); the flips' "
                       "minus_one argument",
    "anchor_round_corners": "round the cell anchors' corners +-w/2, +-h/2 to whole pixels (torchvision's "
                            "AnchorGenerator.generate_anchors) instead of Detectron's rounded sizes",
    "input_format": "channel order of the network's input image: 'BGR' (Detectron, Detectron2's INPUT.FORMAT) or 'RGB' "
                    "(torchvision)",
    "input_scale": "the value of a white pixel in the input: 255.0 (uint8 values) or 1.0 (torchvision's [0, 1])",
    "image_mean": "per-channel mean subtracted from the input, in its order and scale (torchvision's image_mean; "
                  "MODEL.PIXEL_MEAN; Detectron's PIXEL_MEANS)",
    "image_std": "per-channel divisor after the mean (torchvision's image_std; MODEL.PIXEL_STD)",
    "resize": "the test-time resize: 'prep_im_for_blob' (Detectron), 'ResizeShortestEdge' (Detectron2) or "
              "'GeneralizedRCNNTransform' (torchvision)",
}


@dataclass(frozen=True)
class Convention:
    """Every knob that differs between Detectron and Detectron2. Immutable; use :meth:`replace`."""

    name: str
    legacy_plus_one: bool
    anchor_offset: float
    anchor_rounding: bool
    anchor_order: str
    roi_aligned: bool
    sampling_ratio: int
    background_first: bool
    mask_paste: str
    post_nms_topk_per_image: bool
    post_nms_topk_train: int
    rpn_smooth_l1_beta: float
    box_smooth_l1_beta: float
    keypoint_half_pixel: bool
    hflip_minus_one: bool
    anchor_round_corners: bool = False
    input_format: str = "BGR"
    input_scale: float = 255.0
    image_mean: Tuple[float, float, float] = (103.530, 116.280, 123.675)
    image_std: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    resize: str = "ResizeShortestEdge"

    def __post_init__(self) -> None:
        _check_bool = (
            "legacy_plus_one", "anchor_rounding", "roi_aligned", "background_first",
            "post_nms_topk_per_image", "keypoint_half_pixel", "hflip_minus_one", "anchor_round_corners",
        )
        for knob in _check_bool:
            if not isinstance(getattr(self, knob), bool):
                raise ValueError(f"{knob} must be True or False, got {getattr(self, knob)!r}")
        off = self.anchor_offset
        if isinstance(off, bool) or not isinstance(off, (int, float)) or not (0.0 <= off < 1.0):
            raise ValueError(f"anchor_offset must be a number in [0, 1), got {off!r}")
        if self.anchor_order not in _ANCHOR_ORDERS:
            raise ValueError(f"anchor_order must be one of {_ANCHOR_ORDERS}, got {self.anchor_order!r}")
        if self.mask_paste not in MASK_PASTES:
            raise ValueError(f"mask_paste must be one of {MASK_PASTES}, got {self.mask_paste!r}")
        if isinstance(self.sampling_ratio, bool) or not isinstance(self.sampling_ratio, int) or self.sampling_ratio < 0:
            raise ValueError(f"sampling_ratio must be an integer >= 0 (0 = adaptive), got {self.sampling_ratio!r}")
        k = self.post_nms_topk_train
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"post_nms_topk_train must be an integer >= 1, got {k!r}")
        self._check_input_knobs()
        for knob in ("rpn_smooth_l1_beta", "box_smooth_l1_beta"):
            b = getattr(self, knob)
            if isinstance(b, bool) or not isinstance(b, (int, float)) or not b >= 0 or not math.isfinite(b):
                raise ValueError(f"{knob} must be a number >= 0 (0 means L1) and finite, got {b!r}")

    def _check_input_knobs(self) -> None:
        """The knobs torchvision's preset added: the anchors' corner rounding and the input's format."""
        if self.anchor_rounding and self.anchor_round_corners:
            raise ValueError("anchor_rounding and anchor_round_corners are two ways of rounding: set at most one")
        if self.input_format not in INPUT_FORMATS:
            raise ValueError(f"input_format must be one of {INPUT_FORMATS}, got {self.input_format!r}")
        if self.resize not in RESIZES:
            raise ValueError(f"resize must be one of {RESIZES}, got {self.resize!r}")
        sc = self.input_scale
        if isinstance(sc, bool) or not isinstance(sc, (int, float)) or not (0 < sc < math.inf):
            raise ValueError(f"input_scale must be a positive finite number, got {sc!r}")
        for knob in ("image_mean", "image_std"):
            v = getattr(self, knob)
            if (not isinstance(v, tuple) or len(v) != 3 or any(isinstance(x, bool) or not isinstance(x, (int, float))
                                                               or not math.isfinite(x) for x in v)
                    or (knob == "image_std" and min(v) <= 0)):
                raise ValueError(f"{knob} must be a tuple of 3 finite numbers (one per channel"
                                 f"{', positive' if knob == 'image_std' else ''}), got {v!r}")

    # -- the one join between the two layers' names ------------------------------------------
    def operator_flags(self, *flags: str) -> Dict[str, Any]:
        """The operators' own keyword arguments, from this bundle's knobs, through :data:`OPERATOR_FLAGS`:
        ``roi_align(x, rois, 7, **conv.operator_flags("aligned", "sampling_ratio"))``. As Detectron2's
        ``from_config`` turns config keys into an operator's arguments; with no name, every flag."""
        unknown = [f for f in flags if f not in OPERATOR_FLAGS]
        if unknown:
            raise ValueError(f"flags must be operator flags ({', '.join(OPERATOR_FLAGS)}), got {unknown}")
        return {f: getattr(self, OPERATOR_FLAGS[f]) for f in (flags or tuple(OPERATOR_FLAGS))}

    def operator_flag(self, flag: str) -> Any:
        """One operator argument's value from this bundle: ``conv.operator_flag("aligned")`` is ``conv.roi_aligned``."""
        return self.operator_flags(flag)[flag]

    # -- derived, read-only views named after config values --------------------------------
    @property
    def pooler_type(self) -> str:
        """The ``MODEL.ROI_*_HEAD.POOLER_TYPE`` value that gives this ROIAlign."""
        return "ROIAlignV2" if self.roi_aligned else "ROIAlign"

    @property
    def nms_suppresses_ties(self) -> bool:
        """Legacy NMS suppresses at IoU >= threshold; torchvision's at IoU > threshold."""
        return self.legacy_plus_one

    @property
    def clip_max_offset(self) -> int:
        """Boxes are clipped to [0, W - clip_max_offset]: 1 for Detectron, 0 for Detectron2."""
        return 1 if self.legacy_plus_one else 0

    def knobs(self) -> Dict[str, Any]:
        """The knobs as a plain dict (without the name)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "name"}

    def replace(self, **knobs: Any) -> "Convention":
        """A copy with some knobs changed, named after the change: ``DETECTRON2.replace(roi_aligned=False)``."""
        known = set(self.knobs())
        given_flags = sorted(f for f in set(knobs) & set(OPERATOR_FLAGS) if OPERATOR_FLAGS[f] != f)
        if given_flags:
            v = given_flags[0]
            raise ValueError(f"{v} is an operator's flag; the Convention's knob for it is {OPERATOR_FLAGS[v]}: "
                             f"replace({OPERATOR_FLAGS[v]}=...)")
        unknown = sorted(set(knobs) - known - {"name"})
        if unknown:
            raise ValueError(
                f"unknown convention knob(s) {unknown}; the knobs are: {', '.join(sorted(known))}"
            )
        name = knobs.pop("name", None)
        if name is None:
            changed = [f"{k}={v!r}" for k, v in knobs.items() if getattr(self, k) != v]
            name = self.name if not changed else f"{self.name}+" + ",".join(changed)
        return dataclasses.replace(self, name=name, **knobs)

    def diff(self, other: "Convention") -> Dict[str, Tuple[Any, Any]]:
        """The knobs whose values differ: ``{knob: (self's value, other's value)}``."""
        if not isinstance(other, Convention):
            raise ValueError(f"other must be a Convention, got {type(other).__name__}")
        mine, theirs = self.knobs(), other.knobs()
        return {k: (mine[k], theirs[k]) for k in mine if mine[k] != theirs[k]}

    def describe(self) -> str:
        """A readable table of the knobs, one per line."""
        width = max(len(k) for k in self.knobs())
        lines = [f"{self.name}:"]
        lines += [f"  {k:<{width}} = {v!r}" for k, v in self.knobs().items()]
        return "\n".join(lines)


DETECTRON = Convention(
    name="detectron",
    legacy_plus_one=True,
    anchor_offset=0.5,
    anchor_rounding=True,
    anchor_order="ratio_major",
    roi_aligned=False,
    sampling_ratio=2,
    background_first=True,
    mask_paste="segm_results",
    post_nms_topk_per_image=False,
    post_nms_topk_train=2000,
    rpn_smooth_l1_beta=1.0 / 9.0,
    box_smooth_l1_beta=1.0,
    keypoint_half_pixel=False,
    hflip_minus_one=True,
    anchor_round_corners=False,
    input_format="BGR",
    input_scale=255.0,
    image_mean=(102.9801, 115.9465, 122.7717),
    image_std=(1.0, 1.0, 1.0),
    resize="prep_im_for_blob",
)

DETECTRON2 = Convention(
    name="detectron2",
    legacy_plus_one=False,
    anchor_offset=0.0,
    anchor_rounding=False,
    anchor_order="size_major",
    roi_aligned=True,
    sampling_ratio=0,
    background_first=False,
    mask_paste="paste_masks_in_image",
    post_nms_topk_per_image=True,
    post_nms_topk_train=1000,
    rpn_smooth_l1_beta=0.0,
    box_smooth_l1_beta=0.0,
    keypoint_half_pixel=True,
    hflip_minus_one=False,
    anchor_round_corners=False,
    input_format="BGR",
    input_scale=255.0,
    image_mean=(103.530, 116.280, 123.675),
    image_std=(1.0, 1.0, 1.0),
    resize="ResizeShortestEdge",
)

#: torchvision's detection models (``torchvision/models/detection``, 0.29): ``anchor_utils.py`` (ratio-major anchors,
#: corners rounded, grid from 0), ``ops/poolers.py`` (``roi_align`` with ``aligned=False``, ``sampling_ratio=2``),
#: ``roi_heads.py`` (label 0 background; ``paste_masks_in_image(padding=1)``: Detectron's paste on continuous boxes;
#: smooth L1 with beta 1/9 in ``fastrcnn_loss``), ``rpn.py`` (``post_nms_top_n`` per image, 2000 in training; beta 1/9),
#: ``transform.py`` (RGB in [0, 1], ImageNet mean and std, ``F.interpolate``), the references' flip (x -> W - x)
#: and keypoints (no half-pixel shift: ``heatmaps_to_keypoints`` adds 0.5 to a cell index, as Detectron does).
TORCHVISION = Convention(
    name="torchvision",
    legacy_plus_one=False,
    anchor_offset=0.0,
    anchor_rounding=False,
    anchor_order="ratio_major",
    roi_aligned=False,
    sampling_ratio=2,
    background_first=True,
    mask_paste="segm_results",
    post_nms_topk_per_image=True,
    post_nms_topk_train=2000,
    rpn_smooth_l1_beta=1.0 / 9.0,
    box_smooth_l1_beta=1.0 / 9.0,
    keypoint_half_pixel=False,
    hflip_minus_one=False,
    anchor_round_corners=True,
    input_format="RGB",
    input_scale=1.0,
    image_mean=(0.485, 0.456, 0.406),
    image_std=(0.229, 0.224, 0.225),
    resize="GeneralizedRCNNTransform",
)

PRESETS: Dict[str, Convention] = {"detectron": DETECTRON, "detectron2": DETECTRON2, "torchvision": TORCHVISION}


def get_convention(name_or_convention: "str | Convention") -> Convention:
    """Accept a preset's name (``"detectron"``, ``"detectron2"``, case-insensitive) or a Convention."""
    if isinstance(name_or_convention, Convention):
        return name_or_convention
    if isinstance(name_or_convention, str):
        key = name_or_convention.strip().lower().replace("-", "").replace("_", "")
        key = {"detectron1": "detectron", "d1": "detectron", "d2": "detectron2", "tv": "torchvision"}.get(key, key)
        if key in PRESETS:
            return PRESETS[key]
    from explainer._validate import WrongType  # here, so that importing the package does not import torch

    error = ValueError if isinstance(name_or_convention, str) else WrongType
    raise error(f"name_or_convention must be 'detectron', 'detectron2', 'torchvision' or a Convention, got {name_or_convention!r}")


def check_convention(convention: Any, name: str = "convention") -> Convention:
    """``convention`` itself when it is a :class:`Convention`; otherwise a ``ValueError`` naming the argument. The one
    check every function that takes a Convention uses."""
    if not isinstance(convention, Convention):
        from explainer._validate import WrongType  # here, so that importing the package does not import torch

        raise WrongType(f"{name} must be an explainer.conventions.Convention (for example DETECTRON2), "
                        f"got {type(convention).__name__}")
    return convention
