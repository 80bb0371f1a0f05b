"""Caffe2 detection operators and the flags that carry the two conventions, as data.

Source: Caffe2's detection operators gained a ``legacy_plus_one`` argument (default ``True``) in
pytorch PR #20550 ("make box plus one a legacy argument in detection ops"); ``RoIAlign`` gained a
separate ``aligned`` argument (PR #23706). Detectron2's Caffe2 exporter (``detectron2/export/c10.py``,
``caffe2_modeling.py``) passes ``legacy_plus_one=False`` to every op that has it and forwards the
pooler's ``aligned``. Chapters render these tables and attach live checks computed by the package.
"""

from __future__ import annotations

from typing import Dict, List

__all__ = ["CAFFE2_LEGACY_PLUS_ONE_OPS", "CAFFE2_OPS_WITHOUT_PLUS_ONE", "caffe2_ops_rows"]

#: Operators with ``legacy_plus_one``: what the +1 changes inside each, and what the export sets.
CAFFE2_LEGACY_PLUS_ONE_OPS: List[Dict[str, str]] = [
    {
        "op": "GenerateProposals",
        "plus_one_affects": "anchor decoding (width x2-x1+1, decoded x2 minus 1), clipping to W-1, "
                            "min-size filter on +1 sizes, NMS with +1 areas",
        "default": "legacy_plus_one=True",
        "detectron2_export_sets": "legacy_plus_one=False (one op per FPN level, Detectron2 cell anchors passed as a tensor)",
        "live_check": "decode",
    },
    {
        "op": "BBoxTransform",
        "plus_one_affects": "box decoding: width x2-x1+1 and the '- 1' on the decoded x2/y2",
        "default": "legacy_plus_one=True",
        "detectron2_export_sets": "legacy_plus_one=False, apply_scale=True",
        "live_check": "decode",
    },
    {
        "op": "BoxWithNMSLimit",
        "plus_one_affects": "per-class NMS (and soft-NMS) with +1 areas",
        "default": "legacy_plus_one=True",
        "detectron2_export_sets": "legacy_plus_one=False, input_boxes_include_bg_cls=False, output_classes_include_bg_cls=False",
        "live_check": "nms",
    },
    {
        "op": "CollectAndDistributeFpnRpnProposals",
        "plus_one_affects": "FPN level of each RoI from its +1 area",
        "default": "legacy_plus_one=True",
        "detectron2_export_sets": "not used: the export calls CollectRpnProposals then DistributeFpnProposals",
        "live_check": "area",
    },
    {
        "op": "DistributeFpnProposals",
        "plus_one_affects": "BoxesArea / MapRoIsToFpnLevels: FPN level from the +1 area",
        "default": "legacy_plus_one=True",
        "detectron2_export_sets": "legacy_plus_one=False, roi_canonical_scale=224, roi_canonical_level=4",
        "live_check": "area",
    },
]

#: Operators in the same graphs that have no ``legacy_plus_one``.
CAFFE2_OPS_WITHOUT_PLUS_ONE: List[Dict[str, str]] = [
    {"op": "CollectRpnProposals", "why": "only sorts proposals by score and keeps the top N"},
    {"op": "RoIAlign", "why": "has its own 'aligned' argument instead (the half-pixel shift); the export passes the pooler's value"},
]


def caffe2_ops_rows() -> List[List[str]]:
    """The first table as rows (op, what +1 changes, default, what Detectron2's export sets)."""
    return [[d["op"], d["plus_one_affects"], d["default"], d["detectron2_export_sets"]] for d in CAFFE2_LEGACY_PLUS_ONE_OPS]
