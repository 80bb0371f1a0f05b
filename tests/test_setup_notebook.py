"""explainer.setup_notebook: the first cell of every chapter."""

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
