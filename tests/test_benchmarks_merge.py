"""`python -m benchmarks.run --merge`: the rows of the benchmarks run now replace theirs, the others stay."""

from __future__ import annotations

from benchmarks.common import Row
from benchmarks.run import merge, render


def test_merge_replaces_the_measured_sections_and_keeps_the_others():
    old = render([Row("anchors", "all anchors", 6.0, "ms", "< 20 ms", True, "kept"),
                  Row("browser latency", "FlipDashboard: p95 input to painted", 340.0, "ms", "<= 150 ms", False, "old"),
                  Row("labels", "permute", 1.0, "ms")], "old note")
    new = [Row("browser latency", "FlipDashboard: p95 input to painted", 80.0, "ms", "<= 150 ms", True, "new"),
           Row("browser latency", "NMSDashboard: p95 input to painted", 90.0, "ms", "<= 150 ms", True, "new")]
    text = merge(old, new, "new note")
    rows = [ln for ln in text.splitlines() if ln.startswith("| ") and not ln.startswith("| section")]
    assert "new note" in text and "old note" not in text
    assert [r.split(" | ")[0][2:] for r in rows] == ["anchors", "labels", "browser latency", "browser latency"]
    assert "340 ms" not in text and "| 80 ms |" in text and "| 90 ms |" in text and "kept" in text


def test_merge_into_a_file_without_a_table_is_the_new_table():
    new = [Row("labels", "permute", 1.0, "ms")]
    assert merge("# Benchmarks\n\nnothing yet\n", new, "note") == render(new, "note")


def test_a_partly_measured_section_keeps_its_rows_that_were_not_measured_again():
    old = render([Row("browser latency", "FlipDashboard: p95 input to painted", 340.0, "ms", "<= 150 ms", False, "old"),
                  Row("browser latency", "NMSDashboard: p95 input to painted", 70.0, "ms", "<= 150 ms", True, "kept"),
                  Row("labels", "permute", 1.0, "ms")], "old note")
    new = [Row("browser latency", "FlipDashboard: p95 input to painted", 80.0, "ms", "<= 150 ms", True, "new")]
    text = merge(old, new, "new note", partial_sections={"browser latency"})
    rows = [ln for ln in text.splitlines() if ln.startswith("| ") and not ln.startswith("| section")]
    assert [r.split(" | ")[1] for r in rows] == ["NMSDashboard: p95 input to painted", "permute",
                                                 "FlipDashboard: p95 input to painted"]
    assert "340 ms" not in text and "| 80 ms |" in text and "| 70 ms |" in text
