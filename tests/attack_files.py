"""Hostile and broken checkpoint files, built in code for the attack suite (nothing binary is committed).

* A few pickle opcodes as functions, to write what no pickler would (shared-tuple bombs, missing BUILDs,
  lying lengths); the opcode bytes are the stdlib's ``pickle`` constants.
* :func:`torch_archive` / :func:`data_pkl`: a ``.pth`` in ``torch.save``'s zip layout from a ``data.pkl`` and
  storage members, with storage declarations of our choosing (:class:`FakeStorage`, :class:`FakeTensor`).
* :data:`PAYLOADS`: one file per route by which a pickle can call something (GLOBAL, STACK_GLOBAL, INST, OBJ,
  NEWOBJ, NEWOBJ_EX, REDUCE through allowed callables, BUILD, EXT, PERSID, protocols 0 to 5, inside a ``.pth``).
  Each payload that a plain ``pickle.load`` would run creates the marker file it is given.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

P2, P4, P5 = b"\x80\x02", b"\x80\x04", b"\x80\x05"


def u(s: str) -> bytes:
    """BINUNICODE."""
    b = s.encode()
    return pickle.BINUNICODE + struct.pack("<I", len(b)) + b


def s0(s: str) -> bytes:
    """Protocol 0 STRING (a Python 2 str)."""
    return pickle.STRING + repr(s).encode() + b"\n"


def g(module: str, name: str) -> bytes:
    """GLOBAL."""
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def sg(module: str, name: str) -> bytes:
    """STACK_GLOBAL."""
    return u(module) + u(name) + pickle.STACK_GLOBAL


def i4(n: int) -> bytes:
    return pickle.BININT + struct.pack("<i", n)


def long1(n: int) -> bytes:
    b = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return pickle.LONG1 + bytes([len(b)]) + b


def by(b: bytes) -> bytes:
    return pickle.BINBYTES + struct.pack("<I", len(b)) + b


def put(i: int) -> bytes:
    return pickle.BINPUT + bytes([i]) if i < 256 else pickle.LONG_BINPUT + struct.pack("<I", i)


def get(i: int) -> bytes:
    return pickle.BINGET + bytes([i]) if i < 256 else pickle.LONG_BINGET + struct.pack("<I", i)


def in_dict(value: bytes, key: str = "conv1_w", proto: bytes = P2) -> bytes:
    """``{key: value}`` as a whole pickle."""
    return proto + pickle.EMPTY_DICT + u(key) + value + pickle.SETITEM + pickle.STOP


def shared_tuples(levels: int) -> bytes:
    """t0 = (); t(k+1) = (tk, tk), each memoised and fetched twice: 2**levels items when walked or hashed.

    Leaves the stack as it was; the result is memo entry ``levels`` (push it with ``get(levels)``)."""
    out = pickle.EMPTY_TUPLE + put(0) + pickle.POP
    for k in range(levels):
        out += get(k) + get(k) + pickle.TUPLE2 + put(k + 1) + pickle.POP
    return out


def key_bomb(levels: int) -> bytes:
    """A dict whose key is the shared-tuple structure (hashing it takes 2**levels steps)."""
    return P2 + pickle.EMPTY_DICT + shared_tuples(levels) + get(levels) + pickle.BININT1 + b"\x01" + pickle.SETITEM + pickle.STOP


def top_down_lists(levels: int) -> bytes:
    """Lists nested before they are filled: L0 = [L1, L1], L1 = [L2, L2], ..., filled from the top down, so that
    no size known when a list is appended stays true (2**levels items when walked)."""
    body = b"".join(pickle.EMPTY_LIST + put(k) + pickle.POP for k in range(levels + 1))
    body += b"".join(get(k) + get(k + 1) + pickle.APPEND + get(k + 1) + pickle.APPEND + pickle.POP for k in range(levels))
    return P2 + pickle.EMPTY_DICT + u("x") + body + get(0) + pickle.SETITEM + u("a") + _array_py3(np.zeros(1, np.float32)) \
        + pickle.SETITEM + pickle.STOP


def _array_py3(a: np.ndarray) -> bytes:
    """A numpy array as Python 3 pickles it at protocol 2, without PROTO and STOP."""
    return pickle.dumps(a, protocol=2)[2:-1]


def reconstruct(shape: Tuple[int, ...], module: str = "numpy.core.multiarray") -> bytes:
    """``_reconstruct(ndarray, shape, b'b')`` with no BUILD after it."""
    return g(module, "_reconstruct") + g("numpy", "ndarray") + pickle.MARK + b"".join(long1(d) for d in shape) \
        + pickle.TUPLE + by(b"b") + pickle.TUPLE3 + pickle.REDUCE


def array_state(shape: Tuple[int, ...], data: bytes, spec: str = "f4") -> bytes:
    """_reconstruct(ndarray, (0,), b'b') + BUILD (1, shape, dtype(spec), False, data): shape and data need not agree."""
    dtype = g("numpy", "dtype") + u(spec) + pickle.NEWFALSE + pickle.NEWTRUE + pickle.TUPLE3 + pickle.REDUCE + pickle.MARK \
        + pickle.BININT1 + b"\x03" + u("<") + pickle.NONE * 3 + i4(-1) + i4(-1) + pickle.BININT1 + b"\x00" + pickle.TUPLE \
        + pickle.BUILD
    return reconstruct((0,)) + pickle.MARK + pickle.BININT1 + b"\x01" + pickle.MARK + b"".join(long1(d) for d in shape) \
        + pickle.TUPLE + dtype + pickle.NEWFALSE + by(data) + pickle.TUPLE + pickle.BUILD


def frombuffer(buffer_ops: bytes, shape: Tuple[int, ...], spec: str = "u1") -> bytes:
    """numpy's protocol-5 ``_frombuffer(buffer, dtype(spec), shape, 'C')``; ``buffer_ops`` pushes the buffer."""
    return g("numpy._core.numeric", "_frombuffer") + pickle.MARK + buffer_ops + g("numpy", "dtype") + u(spec) \
        + pickle.TUPLE1 + pickle.REDUCE + pickle.MARK + b"".join(long1(d) for d in shape) + pickle.TUPLE + u("C") \
        + pickle.TUPLE + pickle.REDUCE


def bytearray8(b: bytes) -> bytes:
    return pickle.BYTEARRAY8 + struct.pack("<Q", len(b)) + b


def deep_lists(n: int) -> bytes:
    return in_dict(pickle.EMPTY_LIST * n + pickle.APPEND * (n - 1), key="x")


def deep_tuple(n: int) -> bytes:
    return pickle.NONE + pickle.TUPLE1 * n


# --------------------------------------------------------------------------------------------
# torch archives
# --------------------------------------------------------------------------------------------
class FakeStorage:
    """Pickled as torch's persistent id ('storage', torch.<kind>, key, 'cpu', numel)."""

    def __init__(self, key: str, numel: int, kind: str = "FloatStorage") -> None:
        self.key, self.numel, self.kind = key, numel, kind


class FakeTensor:
    """Pickled as ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())``."""

    def __init__(self, storage: FakeStorage, size: Tuple[int, ...], stride: Optional[Tuple[int, ...]] = None,
                 offset: int = 0) -> None:
        self.storage, self.size, self.offset = storage, size, offset
        self.stride = stride if stride is not None else tuple(int(np.prod(size[i + 1:])) for i in range(len(size)))

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, (self.storage, self.offset, self.size, self.stride, False,
                                                   collections.OrderedDict()))


class _TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, FakeStorage):
            return ("storage", getattr(torch, obj.kind), obj.key, "cpu", obj.numel)
        return None


def data_pkl(obj) -> bytes:
    buf = io.BytesIO()
    _TorchPickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def torch_archive(pkl: bytes, storages: Dict[str, bytes], compression: int = zipfile.ZIP_STORED,
                  folder: str = "archive", extra: Optional[Dict[str, bytes]] = None) -> bytes:
    """A zip in torch.save's layout: folder/data.pkl, folder/byteorder, folder/data/<key>, folder/version."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as z:
        z.writestr(f"{folder}/data.pkl", pkl)
        z.writestr(f"{folder}/byteorder", "little")
        for k, v in storages.items():
            z.writestr(f"{folder}/data/{k}", v)
        for k, v in (extra or {}).items():
            z.writestr(f"{folder}/{k}", v)
        z.writestr(f"{folder}/version", "3\n")
    return buf.getvalue()


def deflate_bomb(path: os.PathLike, nbytes: int, member: str = "data/0") -> None:
    """A torch archive whose storage member (or its data.pkl) inflates from about nbytes/1000 to nbytes."""
    numel = nbytes // 4 if member == "data/0" else 1
    pkl = data_pkl({"w": FakeTensor(FakeStorage("0", numel), (numel,))})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("archive/data.pkl", "w", force_zip64=True) as f:
            f.write(pkl[:2])
            if member == "data.pkl":  # no-op opcodes (MARK, POP_MARK) between PROTO and the real pickle
                _zeros(f, nbytes, fill=pickle.MARK + pickle.POP_MARK)
            f.write(pkl[2:])
        with z.open("archive/data/0", "w", force_zip64=True) as f:
            _zeros(f, 4 * numel)
        z.writestr("archive/byteorder", "little")


def _zeros(f, nbytes: int, fill: bytes = b"\0") -> None:
    chunk = fill * ((1 << 20) // len(fill))
    for _ in range(nbytes // len(chunk)):
        f.write(chunk)
    f.write(fill * ((nbytes % len(chunk)) // len(fill)))


# --------------------------------------------------------------------------------------------
# Payloads: one per route by which a pickle can call something
# --------------------------------------------------------------------------------------------
class _Reduce:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _touch(m: str) -> str:
    return f"touch {m}"


def _open_expr(m: str) -> str:
    return f"open({m!r}, 'w').close()"


# name -> (builder(marker) -> bytes, live): live payloads create the marker under a plain pickle.load
PAYLOADS: Dict[str, Tuple[Callable[[str], bytes], bool]] = {
    **{f"reduce_protocol_{p}": ((lambda m, p=p: pickle.dumps({"blobs": {"x": _Reduce(m)}}, protocol=p)), True)
       for p in range(6)},
    "global_reduce_text": (lambda m: b"cos\nsystem\n(S'" + _touch(m).encode() + b"'\ntR.", True),
    "python2_builtin_eval": (lambda m: g("__builtin__", "eval") + pickle.MARK + s0(_open_expr(m)) + pickle.TUPLE
                             + pickle.REDUCE + pickle.STOP, True),
    "builtins_exec_stack_global": (lambda m: P4 + sg("builtins", "exec") + u(_open_expr(m)) + pickle.TUPLE1
                                   + pickle.REDUCE + pickle.STOP, True),
    "getattr_gadget": (lambda m: P2 + g("builtins", "getattr") + g("builtins", "__import__") + u("os") + pickle.TUPLE1
                       + pickle.REDUCE + u("system") + pickle.TUPLE2 + pickle.REDUCE + u(_touch(m)) + pickle.TUPLE1
                       + pickle.REDUCE + pickle.STOP, False),
    "inst": (lambda m: b"(S'" + _touch(m).encode() + b"'\nios\nsystem\n.", True),
    "obj": (lambda m: b"(cos\nsystem\nS'" + _touch(m).encode() + b"'\no.", True),
    "newobj": (lambda m: P2 + g("subprocess", "Popen") + pickle.MARK + pickle.MARK + u("touch") + u(m) + pickle.LIST
               + pickle.TUPLE + pickle.NEWOBJ + pickle.STOP, False),
    "newobj_ex_allowed_class": (lambda m: P4 + sg("builtins", "dict") + pickle.EMPTY_TUPLE + pickle.EMPTY_DICT
                                + u("x") + u(m) + pickle.SETITEM + pickle.NEWOBJ_EX + pickle.STOP, False),
    "codecs_encode_other_codec": (lambda m: in_dict(g("_codecs", "encode") + u("x") + u("rot13") + pickle.TUPLE2
                                                    + pickle.REDUCE), False),
    "codecs_encode_zlib": (lambda m: in_dict(g("_codecs", "encode") + by(b"x" * 100) + u("zlib_codec") + pickle.TUPLE2
                                             + pickle.REDUCE), False),
    "reduce_calls_a_string": (lambda m: in_dict(u("os.system") + u(_touch(m)) + pickle.TUPLE1 + pickle.REDUCE), False),
    "build_shadows_ordereddict_method": (lambda m: in_dict(g("collections", "OrderedDict") + pickle.EMPTY_TUPLE
                                                           + pickle.REDUCE + pickle.EMPTY_DICT + u("items")
                                                           + g("builtins", "dict") + pickle.SETITEM + pickle.BUILD), False),
    "build_slotstate_class": (lambda m: in_dict(g("collections", "OrderedDict") + pickle.EMPTY_TUPLE + pickle.REDUCE
                                                + pickle.NONE + pickle.EMPTY_DICT + u("__class__") + g("builtins", "dict")
                                                + pickle.SETITEM + pickle.TUPLE2 + pickle.BUILD), False),
    "build_on_a_global": (lambda m: in_dict(g("numpy", "ndarray") + pickle.EMPTY_DICT + u("__reduce__")
                                            + g("builtins", "dict") + pickle.SETITEM + pickle.BUILD), False),
    "build_on_a_list": (lambda m: in_dict(pickle.EMPTY_LIST + pickle.EMPTY_DICT + u("append") + u(m) + pickle.SETITEM
                                          + pickle.BUILD), False),
    "numpy_object_array": (lambda m: pickle.dumps({"blobs": {"x": np.array([_Reduce(m)], dtype=object)}}, protocol=2), True),
    "numpy_object_dtype_scalar": (lambda m: in_dict(g("numpy.core.multiarray", "scalar") + g("numpy", "dtype") + u("O8")
                                                    + pickle.NEWFALSE + pickle.NEWTRUE + pickle.TUPLE3 + pickle.REDUCE
                                                    + u(m) + pickle.TUPLE2 + pickle.REDUCE), False),
    "numpy_ndarray_called": (lambda m: in_dict(g("numpy", "ndarray") + pickle.MARK + long1(1 << 20) + pickle.TUPLE1
                                               + pickle.TUPLE + pickle.REDUCE), False),
    "numpy_dtype_fields_state": (lambda m: in_dict(g("numpy", "dtype") + u("f4") + pickle.NEWFALSE + pickle.NEWTRUE
                                                   + pickle.TUPLE3 + pickle.REDUCE + pickle.MARK + pickle.BININT1 + b"\x03"
                                                   + u("<") + pickle.NONE + pickle.MARK + u("a") + pickle.TUPLE
                                                   + pickle.EMPTY_DICT + i4(4096) + i4(-1) + pickle.BININT1 + b"\x10"
                                                   + pickle.TUPLE + pickle.BUILD), False),
    "reconstruct_memmap": (lambda m: in_dict(g("numpy.core.multiarray", "_reconstruct") + g("numpy", "memmap")
                                             + pickle.MARK + pickle.BININT1 + b"\x00" + pickle.TUPLE + by(b"b")
                                             + pickle.TUPLE3 + pickle.REDUCE), False),
    "reconstruct_other_subtype": (lambda m: in_dict(g("numpy.core.multiarray", "_reconstruct") + g("builtins", "dict")
                                                    + pickle.MARK + pickle.BININT1 + b"\x00" + pickle.TUPLE + by(b"b")
                                                    + pickle.TUPLE3 + pickle.REDUCE), False),
    "bytes_with_a_codec": (lambda m: in_dict(g("builtins", "bytes") + u("78") + u("hex_codec") + pickle.TUPLE2
                                             + pickle.REDUCE), False),
    "reduce_args_not_a_tuple": (lambda m: in_dict(g("builtins", "list") + pickle.EMPTY_LIST + pickle.REDUCE), False),
    "copyreg_reconstructor": (lambda m: P2 + g("copy_reg", "_reconstructor") + g("os", "_wrap_close") + g("builtins", "object")
                              + pickle.NONE + pickle.TUPLE3 + pickle.REDUCE + pickle.STOP, False),
    "ext_code": (lambda m: P2 + pickle.EXT1 + b"\xf0" + u(_touch(m)) + pickle.TUPLE1 + pickle.REDUCE + pickle.STOP, True),
    "persid": (lambda m: b"P" + _touch(m).encode() + b"\n.", False),
    "binpersid": (lambda m: P2 + u(_touch(m)) + pickle.BINPERSID + pickle.STOP, False),
    "out_of_band_buffer": (lambda m: P5 + pickle.NEXT_BUFFER + pickle.STOP, False),
}

#: the extension code the "ext_code" payload uses, registered in the loading process as (module, name, code)
EXT_REGISTRATION: List = ["posix", "system", 0xF0]

# torch archives whose data.pkl is hostile: name -> (builder(marker) -> archive bytes, live under torch.load(weights_only=False))
TORCH_PAYLOADS: Dict[str, Tuple[Callable[[str], bytes], bool]] = {
    "pth_reduce_payload": (lambda m: torch_archive(data_pkl({"model": {"w": FakeTensor(FakeStorage("0", 1), (1,))},
                                                             "x": _Reduce(m)}), {"0": b"\0" * 4}), True),
    "pth_torch_function_global": (lambda m: torch_archive(P2 + g("torch.serialization", "load") + u(m) + pickle.TUPLE1
                                                          + pickle.REDUCE + pickle.STOP, {}), False),
    "pth_persistent_id_not_a_storage": (lambda m: torch_archive(P2 + pickle.MARK + u("module") + u(m) + pickle.TUPLE
                                                                + pickle.BINPERSID + pickle.STOP, {}), False),
    "pth_storage_type_called": (lambda m: torch_archive(P2 + g("torch", "FloatStorage") + pickle.MARK + long1(1 << 20)
                                                        + pickle.TUPLE + pickle.REDUCE + pickle.STOP, {}), False),
    "pth_torchscript": (lambda m: torch_archive(data_pkl({"w": FakeTensor(FakeStorage("0", 1), (1,))}), {"0": b"\0" * 4},
                                                extra={"constants.pkl": pickle.dumps(())}), False),
}
