"""The course detector's fitted weights kept on disk between kernels: read back bit for bit, refitted when the
file is damaged or foreign, never unpickled without restriction, never required.

The reference for every read-back is a fit in the same test (``pipeline.fit_detector`` on the same scenes), not
the cache's own output.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from explainer.conventions import DETECTRON, DETECTRON2
from explainer.course import cache as CC
from explainer.course import pipeline as P


def _weights(det):
    return det.rpn_w, det.cls_w, det.box_w


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(_weights(a), _weights(b))) and a.fit_report == b.fit_report


@pytest.fixture(scope="module")
def fresh():
    """Detectron2's conventions, fitted without the cache (as course_builder's detector)."""
    with CC.single_thread():
        return P.fit_detector(P.synthetic_scenes(CC.N_TRAIN, seed=0), DETECTRON2, seed=0)


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPLAINER_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_the_first_kernel_fits_and_writes_the_next_reads_the_same_weights(folder, fresh):
    first = CC.fitted_detector(DETECTRON2)
    files = list(folder.iterdir())
    assert [f.suffix for f in files] == [".pt"], "one file, no temporary file left"
    assert _same(first, fresh)
    stamp = files[0].stat().st_mtime_ns
    again = CC.fitted_detector(DETECTRON2)
    assert _same(again, fresh) and files[0].stat().st_mtime_ns == stamp, "read back, not written again"
    assert again.fitted_under == DETECTRON2 and again.anchor_order == DETECTRON2.anchor_order
    assert again.background_first is DETECTRON2.background_first


def test_the_course_detector_says_whether_it_was_read_from_the_cache(folder):
    CC.course_detector.cache_clear()
    try:
        a = CC.course_detector()
        CC.course_detector.cache_clear()
        b = CC.course_detector()
    finally:
        CC.course_detector.cache_clear()
    assert (a.cached, b.cached) == (False, True)
    assert _same(a.detector, b.detector) and _same(a.converted, b.converted) and b.fit_s == a.fit_s


def test_each_convention_and_seed_has_its_own_file(folder, fresh):
    CC.fitted_detector(DETECTRON2)
    CC.fitted_detector(DETECTRON)
    CC.fitted_detector(DETECTRON2, seed=1)
    assert len(list(folder.glob("detector-*.pt"))) == 3
    assert _same(CC.fitted_detector(DETECTRON2), fresh)


def _only_file(folder: Path) -> Path:
    (path,) = folder.glob("detector-*.pt")
    return path


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "wrong_shapes", "wrong_layout", "not_a_dict",
                                    "nan", "short_features"])
def test_a_damaged_or_foreign_file_is_refitted_and_replaced(folder, fresh, damage):
    CC.fitted_detector(DETECTRON2)
    path = _only_file(folder)
    good = torch.load(path, weights_only=True)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "garbage":
        path.write_bytes(os.urandom(4096))
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        bad = dict(good)
        if damage == "wrong_shapes":
            bad["cls_w"] = torch.zeros(5, 7)
        elif damage == "wrong_layout":
            bad["background_first"] = not good["background_first"]
        elif damage == "nan":
            bad["rpn_w"] = good["rpn_w"].clone()
            bad["rpn_w"][0, 0, 0] = float("nan")
        elif damage == "short_features":           # plausible shapes that do not fit the features
            bad["rpn_w"] = good["rpn_w"][:, :-1]
        else:
            bad = [good["rpn_w"]]
        torch.save(bad, path)
    got = CC.fitted_detector(DETECTRON2)
    assert _same(got, fresh)
    assert _same(CC.fitted_detector(DETECTRON2), fresh)
    assert torch.equal(torch.load(path, weights_only=True)["cls_w"], fresh.cls_w), "the file was replaced"


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch should-never-exist",))


def test_a_pickle_in_the_cache_is_never_executed(folder, fresh, tmp_path, monkeypatch):
    CC.fitted_detector(DETECTRON2)
    path = _only_file(folder)
    path.write_bytes(pickle.dumps({"rpn_w": _Boom()}))
    monkeypatch.chdir(tmp_path)
    assert _same(CC.fitted_detector(DETECTRON2), fresh)
    assert not (tmp_path / "should-never-exist").exists()


def test_off_writes_nothing(tmp_path, monkeypatch, fresh):
    monkeypatch.setenv("EXPLAINER_CACHE", "off")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert CC.cache_folder() is None
    assert _same(CC.fitted_detector(DETECTRON2), fresh)
    assert not any(tmp_path.rglob("*.pt"))


def test_the_default_folder_follows_xdg_then_home(tmp_path, monkeypatch):
    monkeypatch.delenv("EXPLAINER_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert CC.cache_folder() == tmp_path / "xdg" / "detectron-explainer"
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert CC.cache_folder() == tmp_path / "home" / ".cache" / "detectron-explainer"


def test_a_folder_that_cannot_be_written_is_not_an_error(tmp_path, monkeypatch, fresh):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("EXPLAINER_CACHE", str(blocker / "cache"))
    assert _same(CC.fitted_detector(DETECTRON2), fresh)
    assert blocker.read_text() == "not a folder"


def test_an_edited_source_changes_the_file_name(folder, monkeypatch):
    before = CC._fingerprint(DETECTRON2, 8, 0)
    real = Path.read_bytes

    def edited(self):
        data = real(self)
        return data + b"# edited\n" if self.name == "pipeline.py" else data

    monkeypatch.setattr(Path, "read_bytes", edited)
    assert CC._fingerprint(DETECTRON2, 8, 0) != before


@pytest.mark.parametrize("kwargs", [{"n_train": 0}, {"n_train": 2.5}, {"seed": -1}, {"seed": "0"}])
def test_bad_arguments_name_themselves(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        CC.fitted_detector(DETECTRON2, **kwargs)


def test_a_convention_must_be_a_convention():
    with pytest.raises(ValueError, match="convention"):
        CC.fitted_detector("detectron2")
