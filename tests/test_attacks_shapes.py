"""Degenerate shapes and extreme sizes at every public computation: each is answered, or refused with a
ValueError (or TypeError) -- never an IndexError, RuntimeError, KeyError, OverflowError or ZeroDivisionError from
deep inside torch or numpy.

The table is tests/input_specs.py (one valid call per public function and the kind of each argument); this file
adds, per kind, the shapes a careless caller passes: empty tensors (0 rows, 0 x 0 images and masks), 0-d tensors,
sizes of 0 and of 1e200.
"""

from __future__ import annotations

import pytest
import torch

from tests import input_specs as specs


def _empty(v):
    t = torch.as_tensor(specs.resolve(v))
    if t.dim() == 0:
        return t.reshape(0)
    return t.new_zeros((0,) + tuple(t.shape[1:])) if t.dim() == 1 or t.shape[0] != 1 else t.new_zeros(
        (t.shape[0],) + (0,) * (t.dim() - 1))


def _all_empty(v):
    t = torch.as_tensor(specs.resolve(v))
    return t.new_zeros((0,) * max(t.dim(), 1))


def _zero_d(v):
    t = torch.as_tensor(specs.resolve(v))
    return t.reshape(-1)[0].clone() if t.numel() else t.new_zeros(())


SHAPES = {
    "array": [("empty", _empty), ("all_empty", _all_empty), ("zero_d", _zero_d)],
    "boxes": [("empty", _empty), ("all_empty", _all_empty), ("zero_d", _zero_d)],
    "mask": [("empty", _empty), ("all_empty", _all_empty), ("zero_d", _zero_d)],
    "pair": [("zero", lambda v: (0, 0)), ("huge", lambda v: (1e200, 1e200)), ("one_zero", lambda v: (v[0], 0))],
    "number": [("huge", lambda v: 1e200), ("tiny", lambda v: 1e-300), ("zero", lambda v: 0.0)],
    "int": [("huge", lambda v: 10 ** 200), ("zero", lambda v: 0)],
    "numbers": [("empty", lambda v: []), ("huge", lambda v: [1e200 for _ in v])],
}


def _cases():
    out = []
    for key, args in specs.specs().items():
        for arg, spec in args.items():
            for name, make in SHAPES.get(spec.kind, []):
                out.append(pytest.param(key, arg, name, make, id=f"{key}-{arg}-{name}"))
    return out


@pytest.mark.parametrize("key, arg, name, make", _cases())
def test_degenerate_shape_is_answered_or_refused_with_a_value_error(key, arg, name, make):
    bad = make(specs.resolve(specs.specs()[key][arg].value))
    try:
        specs.call(key, **{arg: bad})
    except (ValueError, TypeError) as e:
        assert len(str(e)) < 2000 and "Traceback" not in str(e)
