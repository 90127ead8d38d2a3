"""Tables: the paper's "value (+delta)" cells, bold best per column, Markdown, HTML and text forms."""

from must.report.tables import (format_delta, format_value, selection_table, teacher_student_table,
                                timings_table, to_html, to_markdown, to_text, transfer_table)


def entry(value: float, metric: str = "top1", delta: float | None = None, **extra: object) -> dict:
    result = {"metric": metric, "value": value, **extra}
    if delta is not None:
        result["delta_vs_supervised"] = delta
    return result


def test_numbers_print_like_the_paper() -> None:
    assert format_value(0.713, percent=True) == "71.3"
    assert format_delta(0.021, percent=True) == "+2.1"
    assert format_delta(-0.02, percent=True) == "-2.0"
    assert format_delta(-0.0001, percent=True) == "+0.0"  # never "-0.0"
    assert format_value(12.34, percent=False) == "12.3"
    assert format_value(0.1234, percent=False) == "0.123"


def test_transfer_table_markdown_has_deltas_and_bold_best() -> None:
    table = transfer_table({
        "supervised": {"classification": entry(0.60), "depth": entry(0.70, "delta1")},
        "must": {"classification": entry(0.713, delta=0.113), "depth": entry(0.68, "delta1", -0.02)},
        "scratch": {"classification": entry(0.50, delta=-0.10)},
    })
    text = to_markdown(table)
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("| Pre-training"))
    assert header == "| Pre-training | classification (top-1 %) | depth (δ < 1.25 %) | Mean (of the columns) |"
    assert "| From scratch | 50.0 (-10.0) | — | — |" in lines  # no mean of a row with a gap
    assert "| Supervised (classification) | 60.0 | **70.0** | 65.0 |" in lines
    assert "| MuST (multi-task pseudo labels) | **71.3** (+11.3) | 68.0 (-2.0) | **69.7** (+4.7) |" in lines
    # rows in the paper's order: baselines first, MuST last
    rows = [line.split("|")[1].strip() for line in lines if line.startswith("| ") and "---" not in line][1:]
    assert rows == ["From scratch", "Supervised (classification)", "MuST (multi-task pseudo labels)"]


def test_lower_is_better_column_bolds_the_minimum() -> None:
    table = transfer_table({"a": {"depth": entry(0.4, "rmse", lower_is_better=True)},
                            "b": {"depth": entry(0.3, "rmse", lower_is_better=True)}})
    assert table.header[1] == ("depth", "RMSE (lower is better)")
    assert [(row[1].text, row[1].bold) for row in table.rows] == [("0.400", False), ("0.300", True)]


def test_html_cells_mark_bold_and_delta_direction() -> None:
    table = transfer_table({"supervised": {"detection": entry(0.45, "ap50_voc")},
                            "must": {"detection": entry(0.5, "ap50_voc", 0.05)},
                            "scratch": {"detection": entry(0.4, "ap50_voc", -0.05)}})
    page = to_html(table)
    assert '<td><strong>50.0</strong> <span class="delta up">(+5.0)</span></td>' in page
    assert '<span class="delta down">(-5.0)</span>' in page
    assert page.count("<tr>") == 4 and "<th>Pre-training</th>" in page


def test_teacher_student_table() -> None:
    table = teacher_student_table({
        "detection": {"metric": "ap50_voc", "teacher": 0.42, "student": 0.40, "delta": -0.02},
        "classification": {"metric": "top1", "teacher": 0.8, "student": None},
    })
    cells = [[cell.text for cell in row] for row in table.rows]
    assert cells == [["classification", "top-1 %", "80.0", "—", "—"],
                     ["detection", "AP50 (VOC) %", "42.0", "40.0", "-2.0"]]
    assert table.rows[1][2].bold and not table.rows[1][3].bold
    assert "| classification | top-1 % | 80.0 | — | — |" in to_markdown(table)


def test_selection_and_timings_tables() -> None:
    results = {"transfer": {"must": {"depth": entry(0.5, "delta1", lr=0.01, steps=300, val_value=0.55,
                                                    grid_cells=6)}}}
    row = [cell.text for cell in selection_table(results).rows[0]]
    assert row == ["must", "depth", "fine-tune", "0.01", "300", "0.5500", "0.5000", "6"]
    timings = timings_table({"teach": 30.0, "train": 3725.0})
    assert [[c.text for c in r] for r in timings.rows] == [["teach", "30.0 s"], ["train", "1 h 02 min"],
                                                           ["total", "1 h 03 min"]]
    assert transfer_table({}) is None and teacher_student_table({}) is None and timings_table({}) is None


def test_transfer_table_subset_rows_and_mean_only_for_fractions() -> None:
    rows = {"supervised": {"classification": entry(0.60), "depth": entry(0.70, "delta1")},
            "must_cls": {"classification": entry(0.62), "depth": entry(0.74, "delta1")},
            "must": {"classification": entry(0.64), "depth": entry(0.80, "delta1")}}
    ladder = to_markdown(transfer_table(rows, rows_shown=["must", "must_cls", "teacher_depth"]))
    assert [line.split("|")[1].strip() for line in ladder.splitlines() if line.startswith("| MuST")] == [
        "MuST (multi-task pseudo labels)", "MuST: classification pseudo labels"]  # the given order
    assert "| MuST: classification pseudo labels | 62.0 | 74.0 | 68.0 (+3.0) |" in ladder.splitlines()
    assert transfer_table(rows, rows_shown=["teacher_depth"]) is None
    rows["must"]["depth"] = entry(2.5, "rmse")  # not a fraction: no mean
    assert "Mean" not in to_markdown(transfer_table(rows))


def test_text_form_aligns_the_same_cells_for_a_terminal() -> None:
    table = transfer_table({"supervised": {"classification": entry(0.60)},
                            "must": {"classification": entry(0.713, delta=0.113)}}, caption="")
    lines = to_text(table).splitlines()
    assert lines[0] == "Pre-training                     classification (top-1 %)"
    assert set(lines[1]) == {"-"} and len(lines[1]) == len(lines[0])
    assert lines[2:] == ["Supervised (classification)                          60.0",
                         "MuST (multi-task pseudo labels)              71.3 (+11.3)"]

