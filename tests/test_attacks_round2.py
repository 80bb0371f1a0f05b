"""Second round of attacks: result masks, trace dumps, the detector cache, self-check answers and legacy
checkpoints. Memory and hang attacks run in the sandbox of ``tests/sandbox.py`` (a child process with limits)."""

from __future__ import annotations

import json

from explainer.__main__ import main


def _uncompressed(n: int):
    """``n`` results on one image, each with an uncompressed RLE mask (3 x 3 pixels on), scores apart by side."""
    seg = {"size": [8, 8], "counts": [9, 3, 5, 3, 5, 3, 36]}
    return [{"image_id": 1, "category_id": 1, "bbox": [float(i % 50), float(i // 50), 3.0, 3.0], "score": 0.5,
             "segmentation": seg} for i in range(n)]


def test_diagnose_reads_more_than_255_uncompressed_rle_masks(tmp_path, capsys):
    ref, cand = tmp_path / "reference.json", tmp_path / "candidate.json"
    ref.write_text(json.dumps(_uncompressed(10_000)))
    cand.write_text(json.dumps(_uncompressed(10_000)))
    assert main(["diagnose", str(ref), str(cand), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_reference"] == out["n_matched"] == 10_000
