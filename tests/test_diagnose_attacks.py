"""Hostile and malformed input to ``python -m explainer diagnose``: every case exits with code 2 and one line
``error: ...`` on stderr, never a traceback, within a time limit; in Python, a ``ValueError`` naming the file.

Each case runs the command line in its own interpreter (a subprocess with a timeout), against a valid reference
file. The file contents come from the list below; the command-line misuse cases change the arguments instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from explainer.diagnosis import report as Dx
from explainer.diagnosis.detections import MAX_RESULTS_BYTES
from tools.notebooks import ROOT

TIMEOUT_S = 120
GOOD = {"image_id": 1, "category_id": 3, "bbox": [10.0, 20.0, 30.0, 40.0], "score": 0.9}


def entry(**kw):
    return json.dumps([{**GOOD, **kw}])


def raw(field: str, text: str) -> str:
    """One result whose ``field`` is written as the literal JSON ``text``."""
    fields = {k: json.dumps(v) for k, v in GOOD.items()}
    fields[field] = text
    return "[{" + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + "}]"


#: name -> file content (str or bytes) and a fragment the one line must hold
CONTENT = {
    "truncated JSON": ('[{"image_id": 1, ', "not valid JSON"),
    "empty file": ("", "empty"),
    "not UTF-8": (b'[{"image_id": 1, "x": "\xff\xfe"}]', "not a UTF-8 text file"),
    "nested 100000 deep (lists)": ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    "nested 100000 deep (objects)": ('{"a":' * 100_000 + "1" + "}" * 100_000, "nested too deeply"),
    "a JSON string naming another file": ('"reference.json"', "holds a JSON string"),
    "a JSON string naming itself": ('"candidate.json"', "holds a JSON string"),
    "a number": ("42", "holds a JSON number"),
    "null": ("null", "holds JSON null"),
    "true": ("true", "holds JSON true/false"),
    "a list of numbers": ("[1, 2, 3]", "entry 0 must be an object"),
    "a list of strings": ('["a.json"]', "entry 0 must be an object"),
    "an empty object": ("{}", "empty JSON object"),
    "a COCO dataset, not results": ('{"info": {}, "images": [], "categories": []}', "is this a COCO results file"),
    "annotations not a list": ('{"annotations": 5}', "'annotations' must be a list"),
    "400-digit integer in bbox": (raw("bbox", "[" + "9" * 400 + ", 1, 2, 3]"), "400 digits"),
    "5000-digit integer": (raw("score", "9" * 5000), "more than 4300 digits"),
    "400-digit integer image id": (raw("image_id", "1" * 400), "beyond a 64-bit integer"),
    "category_id Infinity": (raw("category_id", "Infinity"), "'category_id' must be an integer"),
    "category_id NaN": (raw("category_id", "NaN"), "'category_id' must be an integer"),
    "category_id -Infinity": (raw("category_id", "-Infinity"), "'category_id' must be an integer"),
    "category_id text": (entry(category_id="3"), "'category_id' must be an integer"),
    "category_id 2.5": (entry(category_id=2.5), "'category_id' must be an integer"),
    "category_id true": (entry(category_id=True), "'category_id' must be an integer"),
    "category_id 10**30": (entry(category_id=10 ** 30), "beyond a 64-bit integer"),
    "image_id 1.5": (entry(image_id=1.5), "'image_id' must be an integer or a string"),
    "image_id null": (entry(image_id=None), "'image_id' must be an integer or a string"),
    "image_id list": (entry(image_id=[1]), "'image_id' must be an integer or a string"),
    "bbox text": (entry(bbox="abc"), "'bbox' must be [x, y, width, height]"),
    "bbox of 3": (entry(bbox=[1, 2, 3]), "'bbox' must be [x, y, width, height]"),
    "bbox negative width": (entry(bbox=[1, 2, -3, 4]), "negative width"),
    "bbox with text": (entry(bbox=[1, 2, "3", 4]), "'bbox' must be a number"),
    "bbox with a boolean": (entry(bbox=[True, 2, 3, 4]), "'bbox' must be a number"),
    "bbox null": (entry(bbox=None), "'bbox' must be [x, y, width, height]"),
    "score text": (entry(score="high"), "'score' must be a number"),
    "score list": (entry(score=[0.5]), "'score' must be a number"),
    "missing score": (json.dumps([{k: v for k, v in GOOD.items() if k != "score"}]), "missing field 'score'"),
    "keypoints text": (entry(keypoints="abc"), "'keypoints' must be a flat list"),
    "keypoints of 2": (entry(keypoints=[1, 2]), "'keypoints' must be a flat list"),
    "keypoints with text": (entry(keypoints=[1, "x", 2]), "'keypoints' must be a number"),
    "keypoints of two lengths": (json.dumps([{**GOOD, "keypoints": [1, 2, 2]}, {**GOOD, "keypoints": [1, 2, 2] * 2}]),
                                 "has 2 keypoints where entry 0 has 1"),
    "masks as 'abc'": (entry(segmentation="abc"), "'segmentation' must be RLE"),
    "segmentation a number": (entry(segmentation=42), "'segmentation' must be RLE"),
    "segmentation without counts": (entry(segmentation={"size": [10, 10]}), "without 'size' and 'counts'"),
    "segmentation size of one": (entry(segmentation={"size": [10], "counts": ""}), "size must be [height, width]"),
    "segmentation negative size": (entry(segmentation={"size": [-1, 5], "counts": ""}), "size must be [height, width]"),
    "segmentation size 10**6 squared": (entry(segmentation={"size": [10 ** 6, 10 ** 6], "counts": ""}),
                                        "size must be [height, width]"),
    "segmentation counts a number": (entry(segmentation={"size": [10, 10], "counts": 5}), "counts must be text"),
    "segmentation counts with text": (entry(segmentation={"size": [2, 2], "counts": [1, "a"]}), "counts must be text"),
    "polygon of text": (entry(segmentation=[["a", "b"]]), "polygons must be lists of numbers"),
    "polygon not nested": (entry(segmentation=[1, 2, 3, 4, 5, 6]), "'segmentation' must be RLE"),
    "dict form: boxes text": ('{"boxes": "abc"}', "field 'boxes'"),
    "dict form: masks as 'abc'": ('{"boxes": [[0, 0, 1, 1]], "masks": "abc"}', "field 'masks'"),
    "dict form: inverted box": ('{"boxes": [[1, 1, 0, 0]]}', "negative width or height"),
    "dict form: labels 1.5": ('{"boxes": [[0, 0, 1, 1]], "labels": [1.5]}', "'labels' must be whole numbers"),
    "dict form: labels NaN": ('{"boxes": [[0, 0, 1, 1]], "labels": [NaN]}', "'labels' must be whole numbers"),
    "dict form: 3 scores for 1 box": ('{"boxes": [[0, 0, 1, 1]], "scores": [1, 2, 3]}', "has 3 values for 1 boxes"),
    "another image set": (json.dumps([{**GOOD, "image_id": 99}]), "share no image id"),
}


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "explainer", "diagnose", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S)


def _one_error_line(r: subprocess.CompletedProcess, *fragments: str) -> str:
    assert r.returncode == 2, (r.returncode, r.stdout[-500:], r.stderr[-2000:])
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr[-2000:]
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


@pytest.fixture()
def folder(tmp_path):
    (tmp_path / "reference.json").write_text(json.dumps([GOOD, {**GOOD, "bbox": [50, 60, 10, 10]}]))
    return tmp_path


@pytest.mark.parametrize("name", sorted(CONTENT))
def test_malformed_file_is_one_error_line(folder, name):
    content, fragment = CONTENT[name]
    p = folder / "candidate.json"
    p.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    line = _one_error_line(_run("reference.json", "candidate.json", cwd=folder), fragment)
    assert "candidate.json" in line
    # the same file in Python: a ValueError naming it
    with pytest.raises(ValueError, match="candidate.json"):
        Dx.diagnose(str(folder / "reference.json"), str(p))


def test_files_that_are_not_regular_files(folder):
    (folder / "dir.json").mkdir()
    os.mkfifo(folder / "fifo.json")
    os.symlink("/dev/zero", folder / "zero.json")
    with open(folder / "huge.json", "wb") as f:  # sparse: over the limit without using the disk
        f.truncate(MAX_RESULTS_BYTES + 1)
    cases = {"dir.json": "is a directory", "fifo.json": "not a regular file", "/dev/zero": "not a regular file",
             "zero.json": "not a regular file", "huge.json": "over the 512 MiB limit", "missing.json": "no such file"}
    for path, fragment in cases.items():
        _one_error_line(_run("reference.json", path, cwd=folder), path, fragment)
        _one_error_line(_run(path, "reference.json", cwd=folder), path, fragment)


@pytest.mark.parametrize("args,fragment", [
    ((), "required"),
    (("reference.json",), "required"),
    (("reference.json", "reference.json", "third.json"), "unrecognized arguments"),
    (("reference.json", "reference.json", "--bogus"), "unrecognized arguments"),
    (("reference.json", "reference.json", "--image-size", "a", "b"), "invalid int value"),
    (("reference.json", "reference.json", "--image-size", "0", "5"), "image_size"),
    (("reference.json", "reference.json", "--image-size", "5"), "expected 2 arguments"),
    (("reference.json", "reference.json", "--html", "."), "not a regular file"),
    (("reference.json", "reference.json", "--html", "reference.json"), "must not overwrite an input"),
    (("reference.json", "reference.json", "--html", "no/such/folder/r.html"), "no such folder"),
])
def test_command_line_misuse_is_one_error_line(folder, args, fragment):
    _one_error_line(_run(*args, cwd=folder), fragment)
    assert sorted(p.name for p in folder.iterdir()) == ["reference.json"]  # nothing written


def test_valid_files_still_work_beside_the_attacks(folder):
    r = _run("reference.json", "reference.json", cwd=folder)
    assert r.returncode == 0 and "identical" in r.stdout and not r.stderr
    (folder / "bom.json").write_bytes("\ufeff".encode("utf-8") + (folder / "reference.json").read_bytes())
    r = _run("reference.json", "bom.json", cwd=folder)  # a byte-order mark before the JSON is read past
    assert r.returncode == 0 and "identical" in r.stdout and not r.stderr
