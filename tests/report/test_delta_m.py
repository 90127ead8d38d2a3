"""Delta_m% of the student against its teachers (Maninis et al. 2019; Vandenhende et al. 2021,
eq. 10) by hand, and its place in results.json and the teacher-vs-student table."""

from __future__ import annotations

import pytest

from must.report.results import collect_teacher_vs_student, delta_m_percent
from must.report.tables import teacher_student_table


def test_delta_m_by_hand() -> None:
    entries = collect_teacher_vs_student(
        {"classification": {"top1": 0.80}, "depth": {"rmse": 0.50}, "segmentation": {"miou": 0.40}},
        {"classification": {"top1": 0.84}, "depth": {"rmse": 0.60}})
    assert entries["depth"]["lower_is_better"]
    # classification +5 % (0.84 vs 0.80); depth: rmse up 20 %, lower is better, so -20 %;
    # segmentation has no student number and is left out
    assert delta_m_percent(entries) == pytest.approx((5.0 - 20.0) / 2)
    assert delta_m_percent({"depth": {"metric": "rmse", "teacher": 0.5, "student": 0.4,
                                      "lower_is_better": True}}) == pytest.approx(20.0)
    assert delta_m_percent({"a": {"metric": "x", "teacher": 0.0, "student": 0.3}}) is None
    assert delta_m_percent({}) is None


def test_the_student_table_ends_with_delta_m() -> None:
    entries = {"classification": {"metric": "top1", "teacher": 0.8, "student": 0.84, "delta": 0.04}}
    table = teacher_student_table(entries, delta_m_percent(entries))
    assert [cell.text for cell in table.rows[-1]] == ["all tasks", "Δm %", "—", "—", "+5.0"]
    assert len(teacher_student_table(entries).rows) == 1


def test_student_variants_get_their_metrics_and_delta_m(tmp_path) -> None:
    import json

    from must.report.results import collect_student_variants
    from must.report.tables import student_variants_table
    teachers = {"classification": {"top1": 0.80}, "depth": {"rmse": 0.50}}
    main = {"classification": {"top1": 0.84}, "depth": {"rmse": 0.60}}
    assert collect_student_variants(tmp_path, teachers, main) == {}  # no students/: no table
    variant = tmp_path / "students" / "weighting_upgrad"
    variant.mkdir(parents=True)
    (variant / "metrics.jsonl").write_text(json.dumps(
        {"step": 9, "eval/classification/top1": 0.76, "eval/depth/rmse": 0.45}) + "\n")
    (tmp_path / "students" / "unfinished").mkdir()  # no metrics yet: left out
    variants = collect_student_variants(tmp_path, teachers, main)
    assert list(variants) == ["student", "weighting_upgrad"]
    assert variants["weighting_upgrad"]["metrics"] == {"classification": 0.76, "depth": 0.45}
    # classification -5 %, depth rmse down 10 % (better): +2.5
    assert variants["weighting_upgrad"]["delta_m"] == pytest.approx(2.5)
    assert variants["student"]["delta_m"] == pytest.approx((5.0 - 20.0) / 2)
    table = student_variants_table(variants, collect_teacher_vs_student(teachers, main))
    assert [cell.text for cell in table.rows[1]] == ["weighting_upgrad", "0.760", "0.450", "+2.5"]
