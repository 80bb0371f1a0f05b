"""Attack suite for checkpoint loading and writing: payloads, bombs, files that are not files, legitimate files.

Every hostile file is built here (``tests/attack_files.py``) and loaded in a forked child with a memory cap
(``RLIMIT_AS``: its address space plus 512 MiB), a CPU limit (20 s) and a wall clock (60 s) enforced from outside
(``tests/sandbox.py``). A refusal must be a ``ValueError`` naming the file, short, that never suggests
``weights_only=False``, and that comes from a check rather than from hitting the memory cap. Payloads that a plain
``pickle.load`` (or ``torch.load(weights_only=False)``) would run are run that way too, in the same sandbox, to show
that the marker file they create is real: it never appears when ``load_checkpoint`` reads them.
"""

from __future__ import annotations

import io
import os
import pickle
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from explainer.checkpoints import checkpoint as Ck
from tests.attack_files import (
    EXT_REGISTRATION,
    P2,
    P4,
    P5,
    PAYLOADS,
    TORCH_PAYLOADS,
    FakeStorage,
    FakeTensor,
    array_state,
    by,
    bytearray8,
    data_pkl,
    deep_lists,
    deep_tuple,
    deflate_bomb,
    frombuffer,
    g,
    get,
    in_dict,
    key_bomb,
    long1,
    put,
    reconstruct,
    shared_tuples,
    top_down_lists,
    torch_archive,
    u,
)
from tests.sandbox import ROOT, Sandbox

ROOT_USER = os.geteuid() == 0
NOBODY = 65534


@pytest.fixture(scope="module")
def sandbox():
    box = Sandbox()
    yield box
    box.close()


def refused(report: dict, path: Path, *needles: str) -> str:
    """The load was refused by a check: a short ValueError naming the file, never advising weights_only=False."""
    assert report["outcome"] == "ValueError", report
    msg = report["message"]
    assert report["message_length"] < 500, msg
    assert str(path) in msg and "Traceback" not in msg and "weights_only=False" not in msg and "weights_only` set" not in msg
    assert "needs more memory" not in msg, msg  # a check refused it, not the memory cap
    for n in needles:
        assert n in msg, (n, msg)
    return msg


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------------------------
# Payloads: nothing runs, through any opcode route
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_pickle_payload_is_refused_and_runs_nothing(sandbox, tmp_path, name):
    build, live = PAYLOADS[name]
    marker = tmp_path / "created_by_payload"
    path = write(tmp_path / f"{name}.pkl", build(str(marker)))
    ext = EXT_REGISTRATION if name == "ext_code" else None  # the registry populated, as another library might
    refused(sandbox.run(path, register_ext=ext), path, "nothing in it was run")
    assert not marker.exists()
    if live:  # the same bytes under an unrestricted pickle.load do create the marker
        sandbox.run(path, mode="plain", register_ext=ext)
        assert marker.exists(), name


@pytest.mark.parametrize("name", sorted(TORCH_PAYLOADS))
def test_torch_archive_payload_is_refused_and_runs_nothing(sandbox, tmp_path, name):
    build, live = TORCH_PAYLOADS[name]
    marker = tmp_path / "created_by_payload"
    path = write(tmp_path / f"{name}.pth", build(str(marker)))
    msg = refused(sandbox.run(path), path)
    assert "nothing in it was run" in msg or "TorchScript" in msg
    assert not marker.exists()
    if live:
        sandbox.run(path, mode="torch_unsafe")
        assert marker.exists(), name


def test_torch_refusal_is_reworded_without_its_advice(tmp_path):
    # numpy arrays pass this module's checks but not torch's restricted loader: its long advice is replaced
    path = tmp_path / "numpy_inside.pth"
    torch.save({"w": np.zeros(3, np.float32)}, path)
    with pytest.raises(pickle.UnpicklingError, match="weights_only"):  # what torch itself says
        torch.load(path, weights_only=True)
    with pytest.raises(ValueError) as e:
        Ck.load_checkpoint(path)
    msg = str(e.value)
    assert "restricted loader" in msg and "_reconstruct" in msg and "nothing in it was run" in msg
    assert "weights_only" not in msg and "trust" not in msg and len(msg) < 500


# --------------------------------------------------------------------------------------------
# Bombs: refused by a check, quickly, within the memory cap, with a short message
# --------------------------------------------------------------------------------------------
SET_BOMB = P4 + pickle.EMPTY_DICT + u("k") + shared_tuples(60) + pickle.EMPTY_SET + pickle.MARK + get(60) + pickle.ADDITEMS \
    + pickle.SETITEM + pickle.STOP
PAIRS_BOMB = in_dict(shared_tuples(60) + g("collections", "OrderedDict") + pickle.MARK + get(60) + pickle.NONE
                     + pickle.TUPLE2 + pickle.LIST + pickle.TUPLE1 + pickle.REDUCE)
COLLIDING_KEYS = P2 + pickle.EMPTY_DICT + pickle.MARK + b"".join(long1(k * (2**61 - 1)) + pickle.NONE for k in range(1, 5000)) \
    + pickle.SETITEMS + pickle.STOP
DEEP_DICTS = P2 + pickle.EMPTY_DICT + (u("k") + pickle.EMPTY_DICT) * 100_000 + pickle.SETITEM * 100_000 + pickle.STOP


@pytest.mark.parametrize("name, data, needle", [
    ("key_bomb_191_bytes", key_bomb(22), "dict key that is a tuple"),
    ("key_bomb_never_returns", key_bomb(60), "dict key that is a tuple"),
    ("set_item_bomb", SET_BOMB, "dict key that is a tuple"),
    ("ordereddict_pairs_bomb", PAIRS_BOMB, "dict key that is a tuple"),
    ("shared_tuple_value", in_dict(shared_tuples(60) + get(60), key="x"), "more than 10,000,000 items"),
    ("lists_filled_top_down", top_down_lists(60), "more than 10,000,000 items"),
    ("colliding_integer_keys", COLLIDING_KEYS, "more than 4096 dict keys"),
    ("deep_lists", deep_lists(100_000), "more than 100 levels deep"),
    ("deep_dicts", DEEP_DICTS, "more than 100 levels deep"),
    ("deep_tuple_value", in_dict(deep_tuple(100_000)), "more than 100 levels deep"),
    ("deep_tuple_key", P2 + pickle.EMPTY_DICT + deep_tuple(100_000) + pickle.NONE + pickle.SETITEM + pickle.STOP,
     "dict key that is a tuple"),
    ("too_many_operations", P2 + (pickle.MARK + pickle.POP_MARK) * 1_100_000 + pickle.EMPTY_DICT + pickle.STOP,
     "more than 2,000,000 pickle operations"),
])
def test_structure_bombs(sandbox, tmp_path, name, data, needle):
    path = write(tmp_path / f"{name}.pkl", data)
    refused(sandbox.run(path), path, needle)


@pytest.mark.parametrize("exp", [40, 62])
def test_declared_sizes_of_2_to_the_40_and_62(sandbox, tmp_path, exp):
    n = 2**exp
    too_big = "limit per array" if exp == 40 else "integers from 0 to 2**48"  # a dimension beyond 2**48 is refused first
    cases = {
        "reconstruct_shape": (in_dict(reconstruct((n,))), "before any of its data" if exp == 40 else too_big),
        "build_shape": (in_dict(array_state((n,), b"\0" * 4)), too_big),
        "bytes8_length": (P4 + pickle.BINBYTES8 + n.to_bytes(8, "little") + b"abc", "limit per item"),
        "unicode8_length": (P4 + pickle.BINUNICODE8 + n.to_bytes(8, "little") + b"abc", "limit per item"),
        "frombuffer_shape": (in_dict(frombuffer(by(b"\0" * 4), (n,))), too_big),
        "long4_length": (P2 + pickle.LONG4 + (2**31 - 1).to_bytes(4, "little") + b"\x01", "an integer of"),
    }
    for name, (data, needle) in cases.items():
        path = write(tmp_path / f"{name}.pkl", data)
        refused(sandbox.run(path), path, needle)
    pth = write(tmp_path / "storage.pth", torch_archive(data_pkl({"w": FakeTensor(FakeStorage("0", n), (1,))}),
                                                        {"0": b"\0" * 4}))
    refused(sandbox.run(pth), pth, "limit per array")


def test_array_without_data_is_refused_and_convert_writes_nothing(sandbox, tmp_path):
    # numpy's _reconstruct(ndarray, shape, dtype) allocates the declared shape; without a BUILD nothing fills it
    uninit = write(tmp_path / "uninit.pkl", in_dict(reconstruct((2**26,))))
    refused(sandbox.run(uninit), uninit, "before any of its data")
    empty_no_build = write(tmp_path / "no_build.pkl", in_dict(reconstruct((0,))))
    refused(sandbox.run(empty_no_build), empty_no_build, "gives no data for it")
    short = write(tmp_path / "short.pkl", in_dict(array_state((1000,), b"\0" * 8)))
    refused(sandbox.run(short), short, "needs 3.9 KiB, the file holds 8 B")
    out = tmp_path / "out.pth"
    report = sandbox.run(uninit, mode="cli", argv=["convert", str(uninit), str(out)])
    assert report["outcome"] == "loaded" and report["exit"] == 2, report
    assert not out.exists() and not list(tmp_path.glob(".*.tmp"))


def test_reused_data_cannot_multiply_memory(sandbox, tmp_path):
    big, small = b"\1" * (2 << 20), b"\1" * (256 << 10)
    first = array_state((len(big) // 4,), big)
    twice = P2 + pickle.EMPTY_DICT + u("a") + first.replace(by(big), by(big) + put(9000)) + pickle.SETITEM + u("b") \
        + first.replace(by(big), get(9000)) + pickle.SETITEM + pickle.STOP
    path = write(tmp_path / "twice.pkl", twice)
    refused(sandbox.run(path), path, "a second time")
    one = array_state((len(small) // 4,), small)
    many = P2 + pickle.EMPTY_DICT + u("a0") + one.replace(by(small), by(small) + put(9000)) + pickle.SETITEM \
        + b"".join(u(f"a{k}") + one.replace(by(small), get(9000)) + pickle.SETITEM for k in range(1, 100)) + pickle.STOP
    path = write(tmp_path / "many.pkl", many)
    refused(sandbox.run(path), path, "over its budget")
    shared = P5 + pickle.EMPTY_DICT + u("a") + frombuffer(bytearray8(b"\1" * 16) + put(7), (16,)) + pickle.SETITEM \
        + u("b") + frombuffer(get(7), (16,)) + pickle.SETITEM + pickle.STOP
    path = write(tmp_path / "shared.pkl", shared)
    refused(sandbox.run(path), path, "same buffer to two arrays")
    text = "x" * (256 << 10)
    encodes = P2 + pickle.EMPTY_DICT + u("s0") + g("_codecs", "encode") + put(1) + u(text) + put(2) + u("latin1") \
        + put(3) + pickle.TUPLE2 + pickle.REDUCE + pickle.SETITEM \
        + b"".join(u(f"s{k}") + get(1) + get(2) + get(3) + pickle.TUPLE2 + pickle.REDUCE + pickle.SETITEM for k in range(1, 100)) \
        + pickle.STOP
    path = write(tmp_path / "encodes.pkl", encodes)
    refused(sandbox.run(path), path, "over its budget")


def test_pth_declaring_4_gib_in_2_kb(sandbox, tmp_path):
    path = write(tmp_path / "4gib.pth", torch_archive(data_pkl({"w": FakeTensor(FakeStorage("0", 2**30), (1,))}),
                                                      {"0": b"\0" * 4}))
    assert path.stat().st_size < 2048
    refused(sandbox.run(path), path, "declares 4.0 GiB but the archive holds 4 B")
    view = write(tmp_path / "view.pth", torch_archive(data_pkl({"w": FakeTensor(FakeStorage("0", 1), (2**40,), (0,))}),
                                                      {"0": b"\0" * 4}))
    refused(sandbox.run(view), view, "beyond its storage")
    missing = write(tmp_path / "missing.pth", torch_archive(data_pkl({"w": FakeTensor(FakeStorage("7", 1), (1,))}), {}))
    refused(sandbox.run(missing), missing, "does not hold")


@pytest.mark.slow
@pytest.mark.parametrize("member", ["data/0", "data.pkl"])
def test_deflate_bomb(sandbox, tmp_path, member):
    path = tmp_path / "bomb.pth"
    deflate_bomb(path, 512 << 20, member)
    assert path.stat().st_size < (1 << 20)
    refused(sandbox.run(path), path, "zip bomb")


def test_zip_with_repeated_member_is_refused(sandbox, tmp_path):
    pkl = data_pkl({"w": FakeTensor(FakeStorage("0", 1), (1,))})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/data/0", b"\0" * 4)
        with pytest.warns(UserWarning, match="Duplicate name"):
            z.writestr("archive/data/0", b"\0" * 400)
    path = write(tmp_path / "dup.pth", buf.getvalue())
    refused(sandbox.run(path), path, "repeated")


def test_overlong_text_line(sandbox, tmp_path):
    path = tmp_path / "line.pkl"
    with open(path, "wb") as f:  # GLOBAL then 65 MiB without a newline (a sparse file)
        f.write(b"c")
        f.truncate(65 << 20)
    refused(sandbox.run(path), path, "longer than 64 MiB")


# --------------------------------------------------------------------------------------------
# Paths that are not regular files, too large, or unreadable
# --------------------------------------------------------------------------------------------
def test_fifo_is_refused_without_opening_it(sandbox, tmp_path):
    fifo = tmp_path / "model.pkl"
    os.mkfifo(fifo)
    report = sandbox.run(fifo, wall=30)  # opening it for reading would block until a writer comes: none will
    refused(report, fifo, "named pipe")


def test_devices_and_directories(sandbox, tmp_path):
    link = tmp_path / "zero.pkl"
    link.symlink_to("/dev/zero")
    for path, needle in (("/dev/zero", "is a device"), (link, "is a device"), (tmp_path, "is a directory")):
        refused(sandbox.run(path), Path(path), needle)


def test_files_over_the_maximum_size_are_refused_before_reading(sandbox, tmp_path):
    huge = tmp_path / "huge.pkl"
    with open(huge, "wb") as f:  # sparse: nothing is written
        f.truncate(Ck.DEFAULT_LIMITS.max_file_bytes + 1)
    refused(sandbox.run(huge), huge, "over the 8.0 GiB limit")
    small = write(tmp_path / "small.pkl", pickle.dumps({"w": np.zeros(500, np.float32)}))
    refused(sandbox.run(small, limits={"max_file_bytes": 1000}), small, "over the 1000 B limit")


@pytest.fixture
def shared_dir():
    """A folder another user can traverse (pytest's own tmp folders are private to root)."""
    d = Path(tempfile.mkdtemp(prefix="explainer-attacks-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d)


def test_unreadable_file(sandbox, shared_dir):
    path = write(shared_dir / "model.pkl", pickle.dumps({"w": np.zeros(3, np.float32)}))
    path.chmod(0)
    if ROOT_USER:  # root reads through chmod 000: read it as an unprivileged user instead
        assert sandbox.run(path)["outcome"] == "loaded"
        report = sandbox.run(path, user=NOBODY)
    else:
        report = sandbox.run(path)
    refused(report, path, "permission denied")


# --------------------------------------------------------------------------------------------
# Legitimate files load, exactly
# --------------------------------------------------------------------------------------------
def _arrays():
    rng = np.random.default_rng(0)
    return {"conv.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
            "bn.num_batches_tracked": np.array(7, np.int64), "scale": np.array(0.5, np.float32),
            "fortran": np.asfortranarray(rng.standard_normal((3, 5))), "big_endian": np.arange(6, dtype=">f4"),
            "half": np.arange(4, dtype=np.float16), "mask": np.array([True, False]), "empty": np.zeros((0, 4), np.float32)}


def _same(tensors, arrays):
    assert set(tensors) == set(arrays)
    for k, a in arrays.items():
        t = tensors[k]
        assert tuple(t.shape) == a.shape, k
        assert np.array_equal(t.numpy(), a.astype(a.dtype.newbyteorder("="))), k


@pytest.mark.parametrize("protocol", range(6))
def test_numpy_pickles_of_every_protocol_load_exactly(tmp_path, protocol):
    arrays = _arrays()
    path = write(tmp_path / "d2.pkl", pickle.dumps({"model": arrays, "__author__": "test"}, protocol=protocol))
    if protocol == 5:
        assert b"_frombuffer" in path.read_bytes()
    ck = Ck.load_checkpoint(path)
    assert ck.format == "detectron2 (pkl)" and ck.extra == {"__author__": "test"}
    _same(ck.tensors, arrays)


def test_python2_detectron_file_with_large_and_0d_arrays(tmp_path):
    arrays = {"fc6_w": np.arange(2 << 18, dtype=np.float32).reshape(512, 1024), "lr": np.array(0.02, np.float32),
              "conv1_w": np.ones((2, 3, 1, 1), np.float32)}
    path = Ck.write_detectron_pickle({"blobs": arrays, "cfg": "MODEL:\n  NUM_CLASSES: 81\n"}, tmp_path / "m.pkl")
    data = path.read_bytes()
    # names as Python 2 str (SHORT_BINSTRING), the 2 MiB buffer as BINSTRING, numpy 1's module path
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in data and b"U\x05fc6_w" in data and b"T\x00\x00\x20\x00" in data
    ck = Ck.load_checkpoint(path)
    assert ck.format == "detectron (pkl)" and ck.extra["cfg"].startswith("MODEL")
    _same(ck.tensors, arrays)
    ref = pickle.loads(data, encoding="latin1")  # how Detectron's load_object reads its files in Python 3
    assert ref["cfg"] == ck.extra["cfg"] and all(np.array_equal(ref["blobs"][k], arrays[k]) for k in arrays)


def test_torch_save_files_load_as_torch_reads_them(tmp_path):
    m = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 1), torch.nn.BatchNorm2d(3))
    sd = m.state_dict()
    sd["tied"] = sd["0.weight"]
    sd["view"] = sd["0.weight"][1]
    obj = {"model": sd, "__author__": "t", "iteration": 5, "param": torch.nn.Parameter(torch.ones(2)),
           "half": torch.arange(3, dtype=torch.float16), "optimizer": {"state": {0: {"momentum_buffer": torch.ones(3)}},
                                                                       "param_groups": [{"lr": 0.1, "params": [0, 1]}]}}
    stored = tmp_path / "stored.pth"
    torch.save(obj, stored)
    deflated = tmp_path / "deflated.pth"  # the same archive, members deflated (torch reads those too)
    with zipfile.ZipFile(stored) as zin, zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info))
    for path in (stored, deflated):
        ck = Ck.load_checkpoint(path)
        ref = torch.load(path, weights_only=True)["model"]
        assert ck.format == "detectron2 (pth)" and set(ck.tensors) == set(ref)
        assert all(torch.equal(ck.tensors[k], ref[k]) and ck.tensors[k].shape == ref[k].shape for k in ref)
        assert ck.tensors["1.num_batches_tracked"].shape == ()


def test_legacy_torch_format_is_read(tmp_path):
    path = tmp_path / "legacy.pth"
    torch.save({"w": torch.ones(2)}, path, _use_new_zipfile_serialization=False)
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(2))  # a real legacy file
    assert torch.equal(Ck.load_checkpoint(path).tensors["w"], torch.ones(2))


def test_hand_built_archive_is_what_torch_reads(tmp_path):
    # the builder behind the .pth attacks writes archives torch itself accepts when the declarations are honest
    values = np.arange(6, dtype=np.float32)
    path = write(tmp_path / "hand.pth", torch_archive(data_pkl({"w": FakeTensor(FakeStorage("0", 6), (2, 3))}),
                                                      {"0": values.tobytes()}))
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.from_numpy(values).reshape(2, 3))
    assert torch.equal(Ck.load_checkpoint(path).tensors["w"], torch.from_numpy(values).reshape(2, 3))


@pytest.mark.parametrize("how", ["save .pkl", "save .pth", "protocol 5"])
def test_batchnorm_counter_is_0d_and_audits_clean(tmp_path, how):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    sd = model.state_dict()
    assert sd["1.num_batches_tracked"].shape == ()
    if how == "protocol 5":
        path = write(tmp_path / "m.pkl", pickle.dumps({"model": {k: v.numpy() for k, v in sd.items()}, "__author__": "x"},
                                                      protocol=5))
    else:
        path = Ck.save_checkpoint(sd, tmp_path / f"m{how[-4:]}")
    ck = Ck.load_checkpoint(path)
    assert ck.tensors["1.num_batches_tracked"].shape == ()
    res = Ck.audit(ck.tensors, model)
    assert res["ok"] and not res["mismatched"] and res["matched"] == len(sd)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------
@pytest.fixture
def umask():
    old = os.umask(0o022)
    os.umask(old)

    def set_(mask: int) -> None:
        os.umask(mask)
    yield set_
    os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
@pytest.mark.parametrize("suffix", [".pth", ".pkl"])
def test_output_mode_follows_the_umask(tmp_path, umask, mask, mode, suffix):
    umask(mask)
    out = Ck.save_checkpoint({"w": torch.ones(2)}, tmp_path / f"out{suffix}")
    assert stat.S_IMODE(out.stat().st_mode) == mode
    plain = tmp_path / "plain"
    plain.write_bytes(b"")  # what a normal file write gives, for comparison
    assert stat.S_IMODE(plain.stat().st_mode) == mode
    pkl = Ck.write_detectron_pickle({"blobs": {"w": np.ones(2, np.float32)}}, tmp_path / "d.pkl")
    assert stat.S_IMODE(pkl.stat().st_mode) == mode


def test_overwrite_keeps_the_files_mode(tmp_path, umask):
    umask(0o022)
    out = tmp_path / "out.pth"
    out.write_bytes(b"old")
    out.chmod(0o640)
    Ck.save_checkpoint({"w": torch.ones(2)}, out, force=True)
    assert stat.S_IMODE(out.stat().st_mode) == 0o640 and torch.equal(Ck.load_checkpoint(out).tensors["w"], torch.ones(2))


def test_output_errors_are_value_errors(tmp_path, sandbox, shared_dir):
    (tmp_path / "d.pth").mkdir()
    for path, needle in ((tmp_path / "d.pth", "is a directory"), (tmp_path / "nope" / "o.pth", "no such folder"),
                         (tmp_path / "o.txt", "must end in .pth or .pkl")):
        with pytest.raises(ValueError, match=needle):
            Ck.save_checkpoint({"w": torch.ones(1)}, path, force=True)
    (tmp_path / "f").write_text("")
    with pytest.raises(ValueError, match="is not a folder"):
        Ck.save_checkpoint({"w": torch.ones(1)}, tmp_path / "f" / "o.pth")
    os.mkfifo(tmp_path / "fifo.pth")
    with pytest.raises(ValueError, match="not a regular file"):
        Ck.save_checkpoint({"w": torch.ones(1)}, tmp_path / "fifo.pth", force=True)
    locked = shared_dir / "locked"
    locked.mkdir(mode=0o755)
    if ROOT_USER:  # root writes anywhere: write as an unprivileged user into root's folder
        report = sandbox.run(locked / "o.pth", mode="save", user=NOBODY)
        assert report["outcome"] == "ValueError" and "cannot write in its folder" in report["message"], report
    else:
        locked.chmod(0o555)
        with pytest.raises(ValueError, match="cannot write in its folder"):
            Ck.save_checkpoint({"w": torch.ones(1)}, locked / "o.pth")
    assert not list(locked.iterdir())


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_temporary_file_is_removed_on_any_exception(tmp_path, monkeypatch, exc):
    def failing_save(obj, f):
        f.write(b"partial" * 1000)
        raise exc("interrupted")
    monkeypatch.setattr(Ck.torch, "save", failing_save)
    with pytest.raises(exc):
        Ck.save_checkpoint({"w": torch.ones(1)}, tmp_path / "o.pth")
    assert not list(tmp_path.iterdir())


def test_failed_write_is_one_value_error(tmp_path, monkeypatch):
    def full_disk(obj, f):
        f.write(b"partial")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(Ck.torch, "save", full_disk)
    with pytest.raises(ValueError, match="could not be written: No space left on device; nothing was written"):
        Ck.save_checkpoint({"w": torch.ones(1)}, tmp_path / "o.pth")
    assert not list(tmp_path.iterdir())


def test_sigterm_exits_cleanly_and_removes_the_temporary_file(tmp_path):
    script = textwrap.dedent(f"""
        import sys, time, torch
        from explainer.checkpoints import checkpoint as Ck
        def slow_save(obj, f):
            f.write(b"partial" * 1000)
            f.flush()
            print("writing", flush=True)
            time.sleep(60)
        Ck.torch.save = slow_save
        with Ck.exit_on_sigterm():
            Ck.save_checkpoint({{"w": torch.ones(1)}}, {str(tmp_path / "o.pth")!r})
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "writing\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # the temporary file exists now
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    assert not list(tmp_path.iterdir())


def test_exit_on_sigterm_restores_the_previous_handler():
    before = signal.getsignal(signal.SIGTERM)
    with Ck.exit_on_sigterm():
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before


# --------------------------------------------------------------------------------------------
# Random damage to valid files: a correct load or a ValueError, nothing else, within the limits
# --------------------------------------------------------------------------------------------
def _valid_files(d: Path):
    arrays = {"conv1_w": np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2), "lr": np.array(0.1, np.float32)}
    files = {"py2.pkl": Ck.write_detectron_pickle({"blobs": arrays, "cfg": "x"}, d / "py2.pkl").read_bytes(),
             "p2.pkl": pickle.dumps({"model": arrays, "__author__": "a"}, protocol=2),
             "p5.pkl": pickle.dumps({"model": arrays, "__author__": "a"}, protocol=5)}
    buf = io.BytesIO()
    torch.save({"model": {k: torch.from_numpy(v) for k, v in arrays.items()}}, buf)
    files["t.pth"] = buf.getvalue()
    return files


with tempfile.TemporaryDirectory() as _d:
    _VALID = _valid_files(Path(_d))


@pytest.fixture(scope="module")
def damage_dir():
    d = Path(tempfile.mkdtemp(prefix="explainer-damage-"))
    yield d
    shutil.rmtree(d)


@pytest.mark.slow
@given(name=st.sampled_from(sorted(_VALID)), cut=st.floats(0, 1, exclude_max=True),
       flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 7)), max_size=3))
def test_truncated_or_flipped_files_load_or_are_refused(sandbox, damage_dir, name, cut, flips):
    data = bytearray(_VALID[name])
    for where, bit in flips:
        data[int(where * len(data))] ^= 1 << bit
    truncated = not flips
    if truncated:
        data = data[: int(cut * len(data))] or data[:1]
    path = write(damage_dir / name, bytes(data))
    report = sandbox.run(path, mem=256 << 20, cpu=10, wall=60)
    assert report["outcome"] in ("loaded", "ValueError"), report
    if truncated:
        refused(report, path)
    elif report["outcome"] == "ValueError":
        refused(report, path)
