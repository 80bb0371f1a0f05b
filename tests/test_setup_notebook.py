"""explainer.setup_notebook: the first cell of every chapter."""

import gc
import os
import random

import numpy as np
import pytest
import torch

import explainer


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)
    gc.unfreeze()                 # setup_notebook froze the test process's objects


def test_imports_are_moved_out_of_the_collectors_reach(restore_threads):
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    explainer.setup_notebook()
    assert gc.get_freeze_count() > 10_000       # torch's modules and functions, at least


def test_seeds_every_generator(restore_threads):
    explainer.setup_notebook(seed=3)
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    explainer.setup_notebook(seed=3)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_one_torch_thread_unless_asked(restore_threads):
    torch.set_num_threads(2)
    explainer.setup_notebook()
    assert torch.get_num_threads() == 1
    explainer.setup_notebook(threads=2)
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("threads", [0, -1, 1.5, True, "2"])
def test_refuses_a_thread_count_that_is_not_a_positive_integer(threads, restore_threads):
    with pytest.raises(ValueError, match="threads"):
        explainer.setup_notebook(threads=threads)


_FIT = """
import hashlib, sys, torch
torch.set_num_threads(int(sys.argv[1]))
from explainer.course.cache import course_detector, run_scene
from explainer.conventions import DETECTRON2
c = course_detector()
h = hashlib.sha256()
for t in (c.detector.rpn_w, c.detector.cls_w, c.detector.box_w):
    h.update(t.detach().contiguous().numpy().tobytes())
r = run_scene(0, DETECTRON2, converted=True)
for name, stage in sorted(r.stages.items()):
    for key, v in sorted(stage.items()) if isinstance(stage, dict) else [(name, stage)]:
        if isinstance(v, torch.Tensor):
            h.update(v.detach().contiguous().cpu().numpy().tobytes())
print(h.hexdigest(), torch.get_num_threads())
"""


def test_the_course_detector_is_the_same_whatever_the_callers_thread_count():
    import subprocess
    import sys

    env = {**os.environ, "EXPLAINER_CACHE": "off"}      # fitted in each process, never read back
    out = [subprocess.run([sys.executable, "-c", _FIT, str(n)], capture_output=True, text=True, check=True,
                          timeout=600, env=env).stdout.split() for n in (1, 2)]
    assert out[0][0] == out[1][0], "the fitted detector or its run differs between one and two threads"
    assert [o[1] for o in out] == ["1", "2"], "the caller's thread count is restored"


def test_a_scratch_folder_is_removed_with_its_files_when_the_process_exits(tmp_path):
    import subprocess
    import sys

    code = ("import explainer; w = explainer.scratch_folder(); (w / 'sub').mkdir(); "
            "(w / 'sub' / 'model_final.pkl').write_bytes(b'x' * 1000); print(w)")
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300,
                         env=env).stdout.strip()
    assert out.startswith(str(tmp_path)) and not os.path.exists(out)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("prefix", ["", "a/b", 3, None])
def test_a_scratch_folder_refuses_a_prefix_that_is_not_a_name(prefix):
    with pytest.raises(ValueError, match="prefix"):
        explainer.scratch_folder(prefix)
