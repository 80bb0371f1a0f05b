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


def test_the_note_lists_every_section_measured_again_the_same_day():
    from benchmarks.run import merged_note

    first = "# Benchmarks\n\nMeasured by `make bench` on 2026-01-02 (m) in 10 s. About.\n"
    one = merged_note(first, ["trace"], "2026-01-05", "m", 3.2)
    assert one.startswith("Measured by `make bench` on 2026-01-02; the rows of trace re-measured on 2026-01-05 (m)")
    two = merged_note(f"# Benchmarks\n\n{one} About.\n", ["notebooks"], "2026-01-05", "m", 9)
    assert "the rows of trace, notebooks re-measured on 2026-01-05" in two and "the last notebooks in 9 s" in two
    again = merged_note(f"# Benchmarks\n\n{two} About.\n", ["trace"], "2026-01-05", "m", 1)
    assert "the rows of trace, notebooks re-measured" in again
    later = merged_note(f"# Benchmarks\n\n{two} About.\n", ["boxes"], "2026-01-09", "m", 1)
    assert "the rows of boxes re-measured on 2026-01-09" in later and later.startswith(
        "Measured by `make bench` on 2026-01-02;")
