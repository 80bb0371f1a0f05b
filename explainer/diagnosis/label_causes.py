"""Which label mistake the matched pairs show: an offset, COCO's category ids, or a permutation of the classes.

The labels of matched pairs (the same object on both sides) are compared under every hypothesis at once, pair by
pair, so that the evidence holds when most categories appear once or twice (80 classes, a few dozen
detections per image):

* an offset in the raw labels: candidate = reference + k (background first against last, 1-based label maps);
* an offset in the contiguous index seen through COCO's category id table
  (:data:`explainer.labels.COCO_CATEGORY_IDS`): both sides write COCO ids, and the candidate writes
  ``COCO_IDS[i + k]`` where the reference writes ``COCO_IDS[i]``: the next category, not id + 1, since the ids
  have gaps (11 -> 13, 25 -> 27, ...). This is the class order off by one in a model that writes COCO ids;
* COCO's category ids on one side and contiguous labels (0..79 or 1..80) on the other;
* a permutation: each reference label goes to one candidate label, and no two to the same one.

The hypothesis that explains the most pairs is reported; hypotheses within 2% of it are named in the evidence
(``also_consistent_with``), as when every label lies below COCO's first id gap and an offset of one and
COCO's ids explain the pairs equally. Nothing here imports matplotlib or ipywidgets.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import torch

from explainer.diagnosis.causes import Cause, make_cause
from explainer.labels import COCO_CATEGORY_IDS

__all__ = ["label_causes", "coco_index", "LABEL_FLOOR"]

#: A label cause found on the pairs is at least this strong (numerical noise is at most 0.5).
LABEL_FLOOR = 0.6
#: The share of pairs a hypothesis must explain.
CONSISTENT = 0.9

_IDS = torch.tensor(COCO_CATEGORY_IDS, dtype=torch.long)
_INDEX = torch.full((int(_IDS.max()) + 1,), -1, dtype=torch.long)
_INDEX[_IDS] = torch.arange(len(_IDS))


def coco_index(ids: torch.Tensor) -> torch.Tensor:
    """Each COCO category id's contiguous index (0..79), -1 for values that are not COCO ids."""
    ok = (ids >= 0) & (ids < len(_INDEX))
    out = torch.full_like(ids, -1)
    out[ok] = _INDEX[ids[ok]]
    return out


def _mode(d: torch.Tensor) -> Optional[int]:
    """The most frequent non-zero value (the smallest among equals), or None."""
    d = d[d != 0]
    if not d.numel():
        return None
    vals, counts = torch.unique(d, return_counts=True)
    return int(vals[counts.argmax()])


def _direction(k: int, space: str) -> str:
    which = "contiguous index" if space == "index" else "label"
    if k == 1:
        return (f"candidate {which} = reference {which} + 1: the candidate calls every object by the next class, as "
                f"background-first class scores (Detectron: row 0 is background) read by a background-last head "
                f"(Detectron2: background is the last row) do, or 1-based labels against 0-based")
    if k == -1:
        return (f"candidate {which} = reference {which} - 1: the candidate calls every object by the previous "
                f"class, as background-last class scores (Detectron2) read by a background-first head (Detectron) "
                f"do, or 0-based labels against 1-based")
    return f"candidate {which} = reference {which} {k:+d}: a label map that starts {abs(k)} classes {'later' if k > 0 else 'earlier'}"


def _coco_variants(rl: torch.Tensor, cl: torch.Tensor) -> Tuple[float, str]:
    def via(src: torch.Tensor, dst: torch.Tensor, shift: int) -> float:
        ok = (src - shift >= 0) & (src - shift < len(_IDS))
        m = torch.zeros_like(src, dtype=torch.bool)
        m[ok] = _IDS[src[ok] - shift] == dst[ok]
        return float(m.double().mean())

    return max([(via(rl, cl, 0), "contiguous labels 0..79 on the reference, COCO ids on the candidate"),
                (via(rl, cl, 1), "labels 1..80 on the reference, COCO ids on the candidate"),
                (via(cl, rl, 0), "COCO ids on the reference, contiguous labels 0..79 on the candidate"),
                (via(cl, rl, 1), "COCO ids on the reference, labels 1..80 on the candidate")])


def _permutation(rl: torch.Tensor, cl: torch.Tensor, changed: float) -> Optional[Tuple[float, Dict[str, Any], str]]:
    """A consistent one-to-one relabelling: (strength, evidence, explanation), or None."""
    pairs, counts = torch.unique(torch.stack([rl, cl], 1), dim=0, return_counts=True)
    # each reference label's most frequent candidate label: pairs by label, then by count (descending)
    order = torch.argsort(-counts, stable=True)
    order = order[torch.argsort(pairs[order, 0], stable=True)]
    pairs, counts = pairs[order], counts[order]
    first = torch.ones(len(pairs), dtype=torch.bool)
    first[1:] = pairs[1:, 0] != pairs[:-1, 0]
    group = torch.cumsum(first.long(), 0) - 1
    seen = torch.zeros(int(first.sum()), dtype=torch.long).index_add_(0, group, counts)
    top, top_n = pairs[first], counts[first]
    repeated = seen >= 2
    n_rep = int(seen[repeated].sum())
    cons = float(top_n[repeated].sum()) / n_rep if n_rep else 1.0
    injective = len(torch.unique(top[:, 1])) == len(top)
    moved = top[top[:, 0] != top[:, 1]]
    share_rep = n_rep / max(len(rl), 1)
    dense = share_rep >= 0.6
    if not len(moved) or cons < CONSISTENT or (dense and changed < 0.1) or (not dense and (changed < 0.8 or not injective)):
        return None
    shown = {int(a): int(b) for a, b in moved[:8].tolist()}
    ev: Dict[str, Any] = {"pairs_consistent": cons, "labels_changed": changed, "one_to_one": injective,
                          "labels_seen": len(top), "labels_seen_once": int((seen == 1).sum()),
                          "mapping_reference_to_candidate": shown}
    expl = (f"{changed:.0%} of the matched pairs change label, each reference label to one candidate label "
            f"({len(moved)} labels moved, e.g. {', '.join(f'{a}->{b}' for a, b in list(shown.items())[:4])}).")
    if not dense:
        expl += (f" {int((seen == 1).sum())} of the {len(top)} labels are seen once, so the mapping is checked on the "
                 f"{n_rep} pairs whose label repeats ({cons:.0%} consistent) and for being one to one"
                 f"{'' if injective else ' (it is not)'}.")
    strength = max(LABEL_FLOOR, 0.95 * cons * min(1.0, changed / 0.5 + 0.5) * (1.0 if dense else 0.9))
    return strength, ev, expl


def label_causes(p: Dict[str, torch.Tensor]) -> Tuple[List[Cause], float]:
    """Label causes of the matched pairs ``p`` (``ref_labels``, ``cand_labels``, ``iou``); also returns the share
    of pairs whose label differs (compared on the pairs with IoU >= 0.9 when there are enough of them)."""
    rl, cl = p["ref_labels"], p["cand_labels"]
    close = p["iou"] >= 0.9  # labels are compared on pairs that are surely the same object, when there are enough
    if int(close.sum()) >= max(3, 0.3 * rl.numel()):
        rl, cl = rl[close], cl[close]
    n = rl.numel()
    changed = float((rl != cl).double().mean()) if n else 0.0
    if n < 1 or changed == 0.0 or (n < 3 and changed < 1.0):
        return [], changed
    hyps: List[Tuple[float, str, Dict[str, Any], str]] = []
    k = _mode(cl - rl)
    if k is not None:
        f = float((cl - rl == k).double().mean())
        hyps.append((f, "label_offset", {"offset": k, "space": "labels", "pairs_consistent": f,
                                         "direction": _direction(k, "labels")},
                     f"Candidate label = reference label {k:+d} for {f:.0%} of the matched pairs."))
    ir, ic = coco_index(rl), coco_index(cl)
    both = (ir >= 0) & (ic >= 0)
    k2 = _mode((ic - ir)[both])
    if k2 is not None:
        f = float((both & (ic - ir == k2)).double().mean())
        hyps.append((f, "label_offset", {"offset": k2, "space": "contiguous index through COCO category ids",
                                         "pairs_consistent": f, "direction": _direction(k2, "index")},
                     f"Both sides write COCO category ids, and the candidate's is the category {abs(k2)} "
                     f"{'after' if k2 > 0 else 'before'} the reference's in COCO's list for {f:.0%} of the pairs "
                     f"(category_id = COCO_IDS[i {k2:+d}] for COCO_IDS[i]; ids have gaps, so this is not id {k2:+d})."))
    fc, how = _coco_variants(rl, cl)
    hyps.append((fc, "coco_category_ids", {"pairs_consistent": fc, "direction": how},
                 f"Labels follow COCO's category id table ({how}) for {fc:.0%} of the pairs."))
    best = max(h[0] for h in hyps)
    if best >= CONSISTENT:
        # the first of the best explains the pairs; the others that explain them as well are named
        top = next(h for h in hyps if h[0] >= best - 0.02)
        others = [h for h in hyps if h is not top and h[0] >= best - 0.02]
        ev, expl = dict(top[2]), top[3]
        if others:
            ev["also_consistent_with"] = sorted({h[1] if h[1] != top[1] else f"{h[1]} in the {h[2]['space']}"
                                                 for h in others})
            names = sorted({h[1] for h in others if h[1] != top[1]})
            gap = (" (below COCO's first id gap, 12, the category ids are the contiguous labels + 1)"
                   if "coco_category_ids" in names else "")
            expl += (f" The pairs fit {' and '.join(ev['also_consistent_with'])} as well: every label involved lies "
                     f"where those readings give the same labels{gap}"
                     + (f", so this may equally be {' or '.join(names)}." if names else "."))
        return [make_cause(top[1], max(LABEL_FLOOR, top[0]), ev, expl)], changed
    perm = _permutation(rl, cl, changed)
    if perm is not None:
        return [make_cause("label_permutation", perm[0], perm[1], perm[2])], changed
    return [], changed
