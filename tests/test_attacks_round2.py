"""Second round of attacks: result masks, trace dumps, the detector cache, self-check answers and legacy
checkpoints. Memory and hang attacks run in the sandbox of ``tests/sandbox.py`` (a child process with limits)."""

from __future__ import annotations

import collections
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Tuple

import numpy as np
import pytest
import torch

from explainer.__main__ import main
from explainer.course import cache as CC
from explainer.trace import divergence as T
from tests.attack_files import FakeStorage, FakeTensor, data_pkl
from tests.sandbox import ROOT, Sandbox


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


# --------------------------------------------------------------------------------------------------
# trace dumps
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sandbox():
    box = Sandbox()
    yield box
    box.close()


def _refused(report: dict, path: Path, *needles: str) -> str:
    """Refused by a check (not by the memory cap): a short ValueError naming the file."""
    assert report["outcome"] == "ValueError", report
    msg = report["message"]
    assert report["message_length"] < 600 and str(path) in msg and "this is a bug" not in msg, msg
    for n in needles:
        assert n in msg, (n, msg)
    return msg


def _npz_bomb(path: Path, nbytes: int) -> None:
    """An .npz whose one member, a uint8 array, inflates from about nbytes/1000 to nbytes."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": (nbytes,)})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("a.npy", "w", force_zip64=True) as f:
            f.write(np.lib.format.magic(1, 0) + header.getvalue())
            chunk = bytes(1 << 20)
            for _ in range(nbytes >> 20):
                f.write(chunk)


def test_npz_deflate_bomb_is_refused_before_it_inflates(sandbox, tmp_path):
    path = tmp_path / "bomb.npz"
    _npz_bomb(path, 1 << 30)
    assert path.stat().st_size < (2 << 20)
    report = sandbox.run(path, mode="call", argv=["explainer.trace", "load_dump", str(path)], mem=384 << 20)
    _refused(report, path, "zip bomb", "numpy.savez")


def _save_pt(path: Path, value) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save({"stage": value}, path)
    return path


def _quantized():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.quantize_per_tensor(torch.ones(3), 0.1, 0, torch.quint8)


UNUSUAL_TENSORS = {
    "sparse": (lambda: torch.eye(3).to_sparse(), "sparse"),
    "sparse_csr": (lambda: torch.eye(3).to_sparse_csr(), "sparse"),
    "meta": (lambda: torch.empty(3, device="meta"), "meta device"),
    "float8": (lambda: torch.zeros(3, dtype=torch.float8_e4m3fn), "float8"),
    "quantized": (_quantized, "quantized"),
}


@pytest.mark.parametrize("kind", sorted(UNUSUAL_TENSORS))
def test_unusual_tensors_in_a_pt_dump_get_a_clear_refusal(tmp_path, capsys, kind):
    make, needle = UNUSUAL_TENSORS[kind]
    path = _save_pt(tmp_path / f"{kind}.pt", make())
    with pytest.raises(ValueError) as e:
        T.load_dump(path)
    assert str(e.value).startswith(f"{path}: ") and needle in str(e.value), str(e.value)
    assert T.trace_command(path, path) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: ") and "this is a bug" not in err and err.count("\n") == 1


@pytest.mark.parametrize("kind", sorted(UNUSUAL_TENSORS))
def test_unusual_tensors_given_to_compare_are_refused(kind):
    make, needle = UNUSUAL_TENSORS[kind]
    t = make()
    with pytest.raises(ValueError, match=needle):
        T.compare({"stage": t}, {"stage": t})


def test_huge_tolerances_compare_or_are_refused():
    r, c = {"a": torch.tensor([1.0, 2.0, 3.0])}, {"a": torch.tensor([1.0, 2.5, 3.0])}
    assert T.compare(r, c, atol=1e308).ok
    assert T.compare(r, c, rtol=1e308).ok
    assert not T.compare(r, c, atol=0.1, rtol=0.0).ok
    for kw in ({"atol": 10 ** 400}, {"rtol": 10 ** 400}):
        with pytest.raises(ValueError, match="beyond float64"):
            T.compare(r, c, **kw)


def test_big_endian_npz_is_read_in_native_order(tmp_path):
    x = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    np.savez(tmp_path / "big.npz", a=x.astype(">f4"), n=np.arange(5).astype(">i8"))
    np.savez(tmp_path / "little.npz", a=x, n=np.arange(5))
    report = T.compare(T.load_dump(tmp_path / "big.npz"), T.load_dump(tmp_path / "little.npz"))
    assert [s.cause.name for s in report.stages.values()] == ["identical", "identical"]
    assert T.trace_command(tmp_path / "big.npz", tmp_path / "little.npz") == 0


def _damaged(tmp_path: Path, how: str) -> Path:
    good = tmp_path / "good.npz"
    np.savez(good, a=np.arange(1000, dtype=np.float64))
    data = bytearray(good.read_bytes())
    if how == "truncated":
        data = data[: len(data) // 2]
    elif how == "bad_magic":
        i = data.index(b"\x93NUMPY")
        data[i:i + 6] = b"XXXXXX"
    elif how == "bad_header":
        i = data.index(b"{'descr'")
        data[i:i + 8] = b"{'dexcr'"
    elif how == "short_shape":   # a header that declares more data than the member holds
        i = data.index(b"(1000,)")
        data[i:i + 7] = b"(1001,)"
    path = tmp_path / f"{how}.npz"
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("how", ["truncated", "bad_magic", "bad_header", "short_shape"])
def test_damaged_npz_says_what_is_wrong(tmp_path, how):
    path = _damaged(tmp_path, how)
    with pytest.raises(ValueError) as e:
        T.load_dump(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: ") and "pickled" not in msg, msg
    assert "truncated" in msg and "numpy.savez" in msg, msg


def test_object_npz_still_says_pickled(tmp_path):
    np.savez(tmp_path / "obj.npz", a=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError, match="pickled objects"):
        T.load_dump(tmp_path / "obj.npz")


@pytest.mark.parametrize("dtype,a,b", [(np.int64, 2 ** 62, 2 ** 62 + 1), (np.uint64, 2 ** 64 - 1, 2 ** 64 - 2),
                                       (np.uint64, 2 ** 63 + 5, 2 ** 63 + 4)])
def test_large_integers_are_compared_exactly(dtype, a, b):
    r, c = {"n": np.array([a, 7], dtype=dtype)}, {"n": np.array([b, 7], dtype=dtype)}
    s = T.compare(r, c).stages["n"]
    assert s.cause.name != "identical" and s.max_abs == 1.0
    exact = T.compare(r, c, atol=0.0, rtol=0.0)
    assert not exact.ok and exact.stages["n"].failing == 1
    assert T.compare(r, r).stages["n"].cause.name == "identical"


def test_repeated_npz_member_is_refused(tmp_path):
    path = tmp_path / "dup.npz"
    with zipfile.ZipFile(path, "w") as z, warnings.catch_warnings():
        warnings.simplefilter("ignore")                       # zipfile's "Duplicate name" warning
        for v in (1.0, 2.0):
            buf = io.BytesIO()
            np.save(buf, np.full(3, v))
            z.writestr("a.npy", buf.getvalue())
    assert [i.filename for i in zipfile.ZipFile(path).infolist()] == ["a.npy", "a.npy"]
    with pytest.raises(ValueError, match="appears twice") as e:
        T.load_dump(path)
    assert str(e.value).startswith(f"{path}: ")


def test_control_characters_in_stage_names_cannot_forge_report_lines():
    forged = "a\nno divergence: every stage is identical or within the tolerance.\r\x1b[2K"
    report = T.compare({forged: torch.zeros(3)}, {forged: torch.ones(3)})
    assert not report.ok
    text = report.summary()
    assert not any(line.startswith("no divergence") for line in text.splitlines())
    assert "\r" not in text and "\x1b" not in text
    assert "\\n" in text


def test_huge_name_map_gives_a_short_error_line(tmp_path, capsys):
    np.savez(tmp_path / "d.npz", a=np.zeros(3))
    (tmp_path / "map.json").write_text(json.dumps({f"stage_{i}": f"other_{i}" for i in range(200_000)}))
    assert T.trace_command(tmp_path / "d.npz", tmp_path / "d.npz", tmp_path / "map.json") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and len(err) < 3000 and "200,000 in all" in err


def test_name_map_with_a_repeated_key_is_refused(tmp_path, capsys):
    np.savez(tmp_path / "d.npz", a=np.zeros(3), b=np.zeros(3))
    (tmp_path / "map.json").write_text('{"a": "a", "a": "b"}')
    assert T.trace_command(tmp_path / "d.npz", tmp_path / "d.npz", tmp_path / "map.json") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'map.json'}: ") and "twice" in err


# --------------------------------------------------------------------------------------------------
# the detector cache, and masks whose size asks for a huge canvas
# --------------------------------------------------------------------------------------------------
_LIMITED = """
import resource, sys
{imports}
def vm():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
cap = vm() + {mem}
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
{body}
"""


def _limited(imports: str, body: str, mem: int = 512 << 20, timeout: float = 120.0) -> subprocess.CompletedProcess:
    """Python code run in a child whose address space may grow by at most ``mem`` bytes once ``imports`` ran,
    killed after ``timeout`` seconds."""
    code = _LIMITED.format(imports=imports, mem=mem, body=body)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))


_READ_CACHE = ("from explainer.course import cache as CC\nfrom explainer.conventions import DETECTRON\n"
               "from explainer.course.pipeline import synthetic_scenes\nscene = synthetic_scenes(1, seed=0)[0]")


def _torch_deflate_bomb(path: Path, nbytes: int) -> None:
    """A torch.save archive that torch.load reads (one float32 tensor ``rpn_w`` of nbytes), its storage deflated."""
    numel = nbytes // 4
    pkl = data_pkl({"rpn_w": FakeTensor(FakeStorage("0", numel), (numel,))})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/byteorder", "little")
        with z.open("archive/data/0", "w", force_zip64=True) as f:
            chunk = bytes(1 << 20)
            for _ in range(nbytes >> 20):
                f.write(chunk)
        z.writestr("archive/version", "3\n")


def test_a_deflate_bomb_at_the_cache_path_is_refitted_without_inflating(tmp_path):
    path = tmp_path / "detector-bomb.pt"
    _torch_deflate_bomb(path, 512 << 20)
    _torch_deflate_bomb(tmp_path / "small.pt", 1 << 20)       # the same layout, small: torch reads it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert torch.load(tmp_path / "small.pt", weights_only=True)["rpn_w"].numel() == 1 << 18
    assert path.stat().st_size < (1 << 20)
    body = ("def peak():\n    with open('/proc/self/status') as f:\n"
            "        return next(int(x.split()[1]) * 1024 for x in f if x.startswith('VmHWM:'))\n"
            f"before = peak()\nprint('result', CC._read(__import__('pathlib').Path({str(path)!r}), DETECTRON, scene))\n"
            "print('growth', peak() - before)")
    r = _limited(_READ_CACHE, body, mem=2 << 30)   # room for the bomb: its refusal is what is tested
    assert r.returncode == 0 and "result None" in r.stdout, r.stderr[-2000:]
    growth = int(r.stdout.split("growth ")[1])
    assert growth < 128 << 20, f"reading the cache file grew the process by {growth >> 20} MiB"


def test_a_cache_file_swapped_for_a_fifo_does_not_hang(tmp_path):
    path = tmp_path / "detector-fifo.pt"
    os.mkfifo(path)
    body = ("import pathlib\npathlib.Path.is_file = lambda self: True   # the swap happens after the check\n"
            f"print('result', CC._read(pathlib.Path({str(path)!r}), DETECTRON, scene))")
    r = _limited(_READ_CACHE, body, timeout=60)
    assert r.returncode == 0 and "result None" in r.stdout, r.stderr[-2000:]


@pytest.mark.parametrize("value", ["1", "true", "on", "yes", "ON", " Yes "])
def test_cache_switched_on_keeps_the_default_folder(tmp_path, monkeypatch, value):
    monkeypatch.setenv("EXPLAINER_CACHE", value)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert CC.cache_folder() == tmp_path / "xdg" / "detectron-explainer"


def test_cache_switched_off_or_given_a_folder(tmp_path, monkeypatch):
    for off in ("0", "off", "false", "no"):
        monkeypatch.setenv("EXPLAINER_CACHE", off)
        assert CC.cache_folder() is None
    monkeypatch.setenv("EXPLAINER_CACHE", str(tmp_path / "mine"))
    assert CC.cache_folder() == tmp_path / "mine"


@pytest.mark.parametrize("kind", ["empty_polygons", "rle_differs", "polygon"])
def test_masks_on_a_huge_canvas_allocate_no_canvas(tmp_path, kind):
    h, w = 65536, 32767
    base = {"image_id": 1, "category_id": 1, "bbox": [0, 0, 3, 3], "score": 0.5}
    rle = {"size": [h, w], "counts": [h * w]}
    a = [dict(base, segmentation=rle), dict(base, bbox=[10, 10, 3, 3], segmentation=rle)]
    if kind == "empty_polygons":
        b = [dict(base, segmentation=[]), dict(base, bbox=[10, 10, 3, 3], segmentation=[[]])]
    elif kind == "rle_differs":
        b = [dict(base, segmentation={"size": [h, w], "counts": [5, 4, h * w - 9]}), a[1]]
    else:
        b = [dict(base, segmentation=[[0, 0, 3000, 0, 3000, 6000, 0, 6000]]), a[1]]
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    r = _limited("from explainer.__main__ import main",
                 f"print('exit', main(['diagnose', {str(tmp_path / 'a.json')!r}, {str(tmp_path / 'b.json')!r}]))",
                 mem=1 << 30)
    assert r.returncode == 0 and ("exit 0" in r.stdout or "exit 1" in r.stdout), (r.stdout[-1000:], r.stderr[-2000:])
    assert "more memory" not in r.stderr and "bug" not in r.stderr


# --------------------------------------------------------------------------------------------------
# self-check answers
# --------------------------------------------------------------------------------------------------
def test_a_fraction_with_a_huge_exponent_returns_at_once():
    r = _limited("from explainer.course import selfcheck as S",
                 "for t in ('1e999999999/3', '3/1e999999999', '1e-999999999/3'):\n"
                 "    try:\n        S.parse_number(t)\n    except ValueError as e:\n        print('refused', e)",
                 timeout=60)
    assert r.returncode == 0 and r.stdout.count("refused") == 3, (r.stdout, r.stderr[-2000:])
    assert "not a number I can compare" in r.stdout


@pytest.mark.parametrize("response", ["1e400/1", "1e400", "-1e400", "1/1e-400", 10 ** 400, -(10 ** 400)])
def test_an_answer_beyond_float64_is_the_users_number_not_a_failed_computation(response):
    from explainer.course import selfcheck as S
    from explainer.widgets.selfcheck import SelfCheck

    with pytest.raises(ValueError, match="not a number I can compare"):
        S.parse_number(response)
    said = SelfCheck(2).check("ch02.touching_iou", response)
    assert "not a number I can compare" in said and "Could not compute" not in said, said


# --------------------------------------------------------------------------------------------------
# legacy checkpoints (torch.save before torch 1.6, maskrcnn-benchmark's released files)
# --------------------------------------------------------------------------------------------------
class _LegacyPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, FakeStorage):
            return ("storage", getattr(torch, obj.kind), obj.key, "cpu", obj.numel, None)
        return None


_SYS_INFO = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}


def _legacy(obj, storages, keys=None, numels=None, info=None) -> bytes:
    """A file in torch.save's legacy layout: magic, version, machine, the object, its storage keys, then each
    storage as an int64 element count and its bytes (``storages``: {key: (numel, bytes)})."""
    buf = io.BytesIO()
    for head in (0x1950A86A20F9469CFC6C, 1001, info if info is not None else _SYS_INFO):
        pickle.dump(head, buf, protocol=2)
    _LegacyPickler(buf, protocol=2).dump(obj)
    pickle.dump(list(storages) if keys is None else keys, buf, protocol=2)
    for k, (numel, data) in storages.items():
        buf.write(struct.pack("<q", numel if numels is None else numels[k]) + data)
    return buf.getvalue()


def _maskrcnn_benchmark_like() -> dict:
    g = torch.Generator().manual_seed(0)
    conv = torch.nn.Parameter(torch.randn(8, 3, 3, 3, generator=g))
    stats = torch.randn(40, generator=g)
    return {"model": collections.OrderedDict([
        ("module.backbone.body.stem.conv1.weight", conv),
        ("module.backbone.body.stem.bn1.weight", stats[:8]),          # views of one storage
        ("module.backbone.body.stem.bn1.bias", stats[8:16]),
        ("module.roi_heads.box.predictor.cls_score.weight", torch.randn(3, 4, generator=g).t()),  # strided
        ("module.rpn.head.conv.weight", torch.randn(2, 2, generator=g).half()),
        ("module.num_batches_tracked", torch.tensor(7)),
    ]), "iteration": 90000}


def test_an_honest_legacy_checkpoint_is_read_as_torch_reads_it(tmp_path):
    from explainer.checkpoints import checkpoint as Ck

    path = tmp_path / "model_final.pth"
    torch.save(_maskrcnn_benchmark_like(), path, _use_new_zipfile_serialization=False)
    assert path.read_bytes()[:2] == b"\x80\x02", "the legacy layout, not a zip archive"
    ref = torch.load(path, weights_only=True)["model"]
    ck = Ck.load_checkpoint(path)
    assert len(ck.tensors) == len(ref)
    for k, v in ref.items():
        got = next(t for name, t in ck.tensors.items() if name.endswith(k.split("module.", 1)[1]) or name == k)
        assert torch.equal(got, v.detach()) and got.dtype == v.dtype


def test_a_hand_built_legacy_file_is_what_torch_reads(tmp_path):
    from explainer.checkpoints import checkpoint as Ck

    values = np.arange(6, dtype=np.float32)
    path = tmp_path / "hand.pth"
    path.write_bytes(_legacy({"w": FakeTensor(FakeStorage("0", 6), (2, 3))}, {"0": (6, values.tobytes())}))
    want = torch.from_numpy(values).reshape(2, 3)
    assert torch.equal(torch.load(path, weights_only=True)["w"], want)
    assert torch.equal(Ck.load_checkpoint(path).tensors["w"], want)


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _hostile_legacy(tmp_path: Path, name: str) -> Tuple[bytes, str]:
    ok = {"0": (6, bytes(24))}
    tensor = {"w": FakeTensor(FakeStorage("0", 6), (6,))}
    marker = str(tmp_path / "ran")
    if name == "reduce":
        return _legacy({**tensor, "x": _Payload(marker)}, ok), "refused global 'posix.system'"
    if name == "global":
        return _legacy({**tensor, "x": os.system}, ok), "refused global 'posix.system'"
    if name == "huge_storage":
        n = 1 << 40
        return _legacy({"w": FakeTensor(FakeStorage("0", n), (n,))}, {"0": (n, b"")}), "limit per array"
    if name == "storage_beyond_the_file":
        n = 1 << 28                                           # 1 GiB declared, 24 bytes given
        return _legacy({"w": FakeTensor(FakeStorage("0", n), (n,))}, {"0": (n, bytes(24))}), "truncated"
    if name == "count_disagrees":
        return _legacy(tensor, ok, numels={"0": 1 << 30}), "its data says"
    if name == "keys_disagree":
        return _legacy(tensor, ok, keys=["0", "1"]), "does not match"
    if name == "big_endian":
        return _legacy(tensor, ok, info={**_SYS_INFO, "little_endian": False}), "big-endian"
    if name == "truncated":
        return _legacy(tensor, ok)[:-10], "truncated"
    if name == "truncated_in_pickle":
        return _legacy(tensor, ok)[:90], "truncated"
    raise AssertionError(name)


LEGACY_ATTACKS = ["reduce", "global", "huge_storage", "storage_beyond_the_file", "count_disagrees", "keys_disagree",
                  "big_endian", "truncated", "truncated_in_pickle"]


@pytest.mark.parametrize("name", LEGACY_ATTACKS)
def test_a_hostile_or_broken_legacy_checkpoint_is_refused_unrun(sandbox, tmp_path, name):
    data, needle = _hostile_legacy(tmp_path, name)
    path = tmp_path / f"{name}.pth"
    path.write_bytes(data)
    report = sandbox.run(path, mem=256 << 20)
    _refused(report, path, needle)
    assert report["peak_growth"] < 64 << 20
    assert not (tmp_path / "ran").exists()


def test_a_legacy_pt_dump_is_read_by_trace(tmp_path):
    x = torch.arange(6.0).reshape(2, 3)
    torch.save({"stage": x}, tmp_path / "d.pt", _use_new_zipfile_serialization=False)
    assert torch.equal(T.load_dump(tmp_path / "d.pt")["stage"], x)
    torch.save({"stage": torch.eye(2).to_sparse()}, tmp_path / "s.pt", _use_new_zipfile_serialization=False)
    with pytest.raises(ValueError, match="sparse"):
        T.load_dump(tmp_path / "s.pt")


# --------------------------------------------------------------------------------------------------
# ONNX models, and the bounds every reader uses
# --------------------------------------------------------------------------------------------------
def _external_onnx(folder: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.arange(4, dtype=np.float32), "W")
    g = helper.make_graph([helper.make_node("Add", ["x", "W"], ["y"]), helper.make_node("Relu", ["y"], ["z"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                          [helper.make_tensor_value_info("z", TensorProto.FLOAT, [4])], [w])
    path = folder / "ext.onnx"
    onnx.save_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 16)]), str(path),
                    save_as_external_data=True, location="w.bin", size_threshold=0)
    return path


def test_onnx_with_external_data_beside_it_runs(tmp_path):
    got = T.onnx_intermediates(_external_onnx(tmp_path), {"x": np.ones(4, np.float32)})
    assert got["z"].tolist() == [1.0, 2.0, 3.0, 4.0]


def test_onnx_bytes_or_external_data_elsewhere_get_a_value_error(tmp_path):
    import onnx

    path = _external_onnx(tmp_path)
    feeds = {"x": np.ones(4, np.float32)}
    with pytest.raises(ValueError, match="external data files, which its bytes do not carry"):
        T.onnx_intermediates(path.read_bytes(), feeds)
    with pytest.raises(ValueError, match="bytes are not an ONNX model"):
        T.onnx_intermediates(b"not a model", feeds)
    m = onnx.load(str(path), load_external_data=False)
    for e in m.graph.initializer[0].external_data:
        if e.key == "location":
            e.value = str(tmp_path / "w.bin")
    onnx.save_model(m, str(tmp_path / "absolute.onnx"))
    with pytest.raises(ValueError, match="not a relative path inside") as e:
        T.onnx_intermediates(tmp_path / "absolute.onnx", feeds)
    assert str(e.value).startswith(str(tmp_path / "absolute.onnx"))
    for e_ in m.graph.initializer[0].external_data:
        if e_.key == "location":
            e_.value = "../w.bin"
    onnx.save_model(m, str(tmp_path / "escape.onnx"))
    with pytest.raises(ValueError, match="not a relative path inside"):
        T.onnx_intermediates(tmp_path / "escape.onnx", feeds)
    from explainer.course import network as N

    with pytest.raises(ValueError, match="not a relative path inside"):
        N.set_resize_mode(tmp_path / "escape.onnx", "asymmetric")
    os.truncate(tmp_path / "w.bin", 8)
    with pytest.raises(ValueError, match="does not hold the 16 bytes"):
        T.onnx_intermediates(path, feeds)


def test_every_reader_takes_its_bounds_from_one_place():
    from explainer import _bounds as B
    from explainer import _validate as _v
    from explainer.checkpoints import safe_load
    from explainer.diagnosis import detections
    from explainer.diagnosis import result_masks as RM

    assert safe_load.DEFAULT_LIMITS.max_file_bytes == B.MAX_FILE_BYTES
    assert safe_load.DEFAULT_LIMITS.max_total_bytes == B.MAX_TOTAL_BYTES
    assert T.DUMP_LIMITS.expansion == B.DUMP_EXPANSION and T.DUMP_LIMITS.max_array_bytes == B.MAX_ARRAY_BYTES
    assert CC.CACHE_LIMITS.max_file_bytes == B.CACHE_FILE_BYTES
    assert detections.MAX_RESULTS_BYTES == B.MAX_RESULTS_BYTES and _v.MAX_JSON_BYTES == B.MAX_JSON_BYTES
    assert (RM.MAX_SIDE, RM.DECODE_PIXELS) == (B.MASK_MAX_SIDE, B.MASK_DECODE_PIXELS)


# --------------------------------------------------------------------------------------------------
# smaller: a dashboard's NaN, a convention's infinite beta, image ids, thread counts
# --------------------------------------------------------------------------------------------------
def test_anchor_grid_offset_refuses_nan_and_keeps_its_drawing():
    from explainer.widgets.anchors import AnchorGridDashboard

    d = AnchorGridDashboard()
    d.update(level=4, offset=0.5)
    before = d.result["g2"].copy()
    text = d.update(offset=float("nan"))
    assert "offset must be a finite number" in text, text
    d.controls["offset"].value = float("nan")          # the slider itself takes NaN: compute refuses it
    assert "offset must be a finite number" in d.readout_text, d.readout_text
    assert np.isfinite(d.result["g2"]).all() and np.array_equal(d.result["g2"], before)


@pytest.mark.parametrize("knob", ["rpn_smooth_l1_beta", "box_smooth_l1_beta"])
@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_an_infinite_smooth_l1_beta_is_refused(knob, value):
    from explainer.conventions import DETECTRON2

    with pytest.raises(ValueError, match=f"{knob} must be a number >= 0 .* and finite"):
        DETECTRON2.replace(**{knob: value})


@pytest.mark.parametrize("image_id", ["--5", "\u00b2", "-0-", "\u0665"])
def test_image_ids_that_look_like_numbers_but_are_not_are_kept_as_text(tmp_path, capsys, image_id):
    entry = {"image_id": image_id, "category_id": 1, "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.9}
    (tmp_path / "a.json").write_text(json.dumps([entry]))
    (tmp_path / "b.json").write_text(json.dumps([entry]))
    assert main(["diagnose", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 0
    other = {**entry, "image_id": 5}
    (tmp_path / "c.json").write_text(json.dumps([other]))
    assert main(["diagnose", str(tmp_path / "a.json"), str(tmp_path / "c.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(tmp_path / "c.json") in err and "this is a bug" not in err


def test_fit_detector_gives_the_same_weights_with_one_and_two_threads():
    from explainer.conventions import DETECTRON
    from explainer.course import pipeline as P

    scenes = P.synthetic_scenes(2, seed=0)
    before = torch.get_num_threads()
    try:
        fits = []
        for n in (1, 2):
            torch.set_num_threads(n)
            fits.append(P.fit_detector(scenes, DETECTRON, seed=0))
            assert torch.get_num_threads() == n, "the caller's thread count is restored"
    finally:
        torch.set_num_threads(before)
    a, b = fits
    assert all(torch.equal(x, y) for x, y in ((a.rpn_w, b.rpn_w), (a.cls_w, b.cls_w), (a.box_w, b.box_w)))


# --------------------------------------------------------------------------------------------------
# make present: Voila's token stays off the command line
# --------------------------------------------------------------------------------------------------
def test_voila_gets_its_token_from_the_environment_not_the_command_line(tmp_path):
    import secrets
    import socket
    import time
    import urllib.error
    import urllib.request

    from tools.present import stop_server, voila_command, voila_env

    (tmp_path / "notebooks").mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = secrets.token_hex(16)
    cmd = voila_command(port, root=tmp_path)
    assert not any(token in a for a in cmd)
    env = voila_env(dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
                         JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime")), token=token)
    log = open(tmp_path / "voila.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):   # a redirect to the login page is the answer itself
            return None

    opener = urllib.request.build_opener(_NoRedirect)
    try:
        base, status = f"http://127.0.0.1:{port}/voila/tree", {}
        deadline = time.monotonic() + 90
        while "with" not in status:
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "voila.log").read_text()[-2000:]
            for key, url in (("without", base), ("wrong", base + "?token=" + "0" * 32), ("with", base + "?token=" + token)):
                try:
                    status[key] = opener.open(url, timeout=5).status
                except urllib.error.HTTPError as e:
                    status[key] = e.code
                except OSError:
                    status.clear()
                    time.sleep(0.5)
                    break
        assert status["with"] == 200 and status["without"] in (302, 401, 403) and status["wrong"] in (302, 401, 403), \
            status
        with open(f"/proc/{proc.pid}/cmdline", "rb") as f:
            assert token.encode() not in f.read()
    finally:
        stop_server(proc, log)


# --------------------------------------------------------------------------------------------------
# no catch-all from a file: running out of memory is said as such, naming the files
# --------------------------------------------------------------------------------------------------
def test_out_of_memory_in_trace_and_diagnose_names_the_files(tmp_path, capsys, monkeypatch):
    from explainer.diagnosis import report as Dx

    np.savez(tmp_path / "a.npz", s=np.zeros(3))

    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(T, "compare", no_memory)
    assert main(["trace", str(tmp_path / "a.npz"), str(tmp_path / "a.npz")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'a.npz'}") and "more memory" in err and "bug" not in err, err
    (tmp_path / "r.json").write_text(json.dumps(_uncompressed(2)))
    monkeypatch.setattr(Dx, "diagnose", no_memory)
    assert main(["diagnose", str(tmp_path / "r.json"), str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'r.json'}") and "more memory" in err and "bug" not in err, err


def test_control_characters_in_image_ids_cannot_forge_diagnosis_lines(tmp_path, capsys):
    e = {"image_id": "x\nforged line\x1b[2K", "category_id": 1, "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.9}
    (tmp_path / "a.json").write_text(json.dumps([e]))
    (tmp_path / "b.json").write_text(json.dumps([{**e, "score": 0.5}, {**e, "image_id": "y\r\nforged too"}]))
    assert main(["diagnose", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 1
    out = capsys.readouterr().out
    assert not any(line.startswith("forged") for line in out.splitlines()), out
    assert "\r" not in out and "\x1b" not in out and "\\r\\n" in out


@pytest.mark.parametrize("configs, error", [([], ValueError), ([{}], ValueError), ([3], ValueError), ("P2", TypeError),
                                            ([{"stride": 16, "sizes": [32.0]}], ValueError)])
def test_anchor_level_configs_are_checked(configs, error):
    from explainer import anchors as A

    for fn in (A.all_level_anchors, A.proposal_shift):
        with pytest.raises(error, match="configs"):
            fn(configs=configs)
    assert len(A.proposal_shift(configs=[{"stride": 16, "sizes": [32.0], "aspect_ratios": [1.0]}])) == 1
