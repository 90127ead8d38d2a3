"""The arithmetic every benchmark figure goes through: paired ratios, interleaving, quartiles,
the memory slope. A figure computed wrong here would be published wrong."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import numpy
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # benchmarks/ is not installed

from benchmarks import common, scaling  # noqa: E402


def test_pair_ratios_pair_the_same_round() -> None:
    times = {"a": [1.0, 4.0, 9.0], "b": [2.0, 2.0, 3.0]}
    assert common.pair_ratios(times, "a", "b") == [0.5, 2.0, 3.0]
    # the median of the per-round ratios, not the ratio of the medians (4 / 2 = 2.0 as well here,
    # so a second case where they differ)
    assert common.pair_ratio(times, "a", "b") == 2.0
    skewed = {"a": [1.0, 1.0, 10.0], "b": [1.0, 10.0, 1.0]}
    assert common.pair_ratio(skewed, "a", "b") == 1.0
    assert common.median(skewed["a"]) / common.median(skewed["b"]) == 1.0
    assert common.pair_ratios({"a": [3.0], "b": [4.0]}, "b", "a") == [4 / 3]


def test_pair_ratios_refuse_rounds_that_do_not_pair() -> None:
    with pytest.raises(ValueError, match="same positive number"):
        common.pair_ratios({"a": [1.0, 2.0], "b": [1.0]}, "a", "b")
    with pytest.raises(ValueError):
        common.pair_ratios({"a": [], "b": []}, "a", "b")


def test_quartiles_match_numpy_percentiles() -> None:
    for values in ([0.66, 0.91, 1.08], [0.9, 0.8, 0.95, 0.85, 0.99, 0.7, 0.92], [2.0, 1.0]):
        result = common.quartiles(values)
        q1, middle, q3 = numpy.percentile(values, [25, 50, 75])
        assert result == pytest.approx({"q1": q1, "median": middle, "q3": q3})
    assert common.quartiles([0.5]) == {"q1": 0.5, "median": 0.5, "q3": 0.5}
    with pytest.raises(ValueError):
        common.quartiles([])


def test_ratio_summary_reports_every_round() -> None:
    times = {"bare": [0.9, 0.8, 1.0, 0.7], "label": [1.0, 1.0, 1.0, 1.0]}
    summary = common.ratio_summary(times, "bare", "label")
    assert summary["rounds"] == [0.9, 0.8, 1.0, 0.7]
    assert summary["median"] == pytest.approx(0.85) and summary["q1"] == pytest.approx(0.775)
    assert summary["q3"] == pytest.approx(0.925)


def test_interleave_drops_the_warmup_and_keeps_round_order() -> None:
    calls: list[str] = []

    def candidate(name: str, seconds: list[float]):
        values = iter(seconds)
        return lambda: (calls.append(name), next(values))[1]

    times = common.interleave({"a": candidate("a", [9.0, 1.0, 2.0]), "b": candidate("b", [9.0, 3.0, 4.0])},
                              repeats=2, warmup=1)
    assert times == {"a": [1.0, 2.0], "b": [3.0, 4.0]}
    assert calls == ["a", "b"] * 3


def test_shuffled_rounds_hold_every_candidate_once_and_vary_the_order() -> None:
    orders = common.round_orders(["a", "b"], 40, shuffle_seed=0)
    assert all(sorted(order) == ["a", "b"] for order in orders)
    firsts = {order[0] for order in orders}
    assert firsts == {"a", "b"}  # each side goes first in some rounds
    assert orders == common.round_orders(["a", "b"], 40, shuffle_seed=0)  # seeded
    assert common.round_orders(["a", "b"], 3) == [["a", "b"]] * 3


def test_shuffled_interleave_pairs_each_candidate_with_its_own_round() -> None:
    """Whatever the order, round i of every candidate is its i-th call after the warm-up."""
    counters = {"a": 0, "b": 0}

    def candidate(name: str):
        def run() -> float:
            counters[name] += 1
            return float(counters[name])
        return run

    times = common.interleave({"a": candidate("a"), "b": candidate("b")}, repeats=7, warmup=1, shuffle_seed=3)
    assert times == {"a": [2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], "b": [2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]}


def test_bytes_per_added_image_is_the_least_squares_slope() -> None:
    # 1 KiB per image on top of 900 MB: 1,000 -> 16,000 images add 15,000 KiB
    images = [1000, 4000, 16000]
    peaks = [900 + count / 1024 for count in images]
    assert scaling.bytes_per_added_image(images, peaks) == pytest.approx(1024)
    assert scaling.bytes_per_added_image(images, [900.0, 900.0, 900.0]) == 0
    noisy = [900.0, 903.0, 900.0]
    assert scaling.bytes_per_added_image(images, noisy) == pytest.approx(
        numpy.polyfit(images, noisy, 1)[0] * 2**20)
    with pytest.raises(ValueError):
        scaling.bytes_per_added_image([1000], [900.0])


class _FakeProcess:
    """A process with fixed RSS and PSS (bytes), its descendants, or one that has ended."""

    def __init__(self, rss: int, pss: int, children: list[_FakeProcess] | None = None,
                 ended: bool = False) -> None:
        self.rss, self.pss, self._children, self.ended = rss, pss, children or [], ended

    def _check(self) -> None:
        if self.ended:
            raise scaling.psutil.NoSuchProcess(0)

    def memory_info(self):  # noqa: ANN201
        self._check()
        return type("Memory", (), {"rss": self.rss})()

    def memory_full_info(self):  # noqa: ANN201
        self._check()
        return type("Memory", (), {"rss": self.rss, "pss": self.pss})()

    def children(self, recursive: bool = False) -> list[_FakeProcess]:
        found = list(self._children)
        for child in self._children if recursive else []:
            found += child.children(recursive=True)
        return found


def test_tree_memory_sums_each_process_once_by_pss_or_rss() -> None:
    # a parent and two forked workers sharing 600 of their RSS: PSS splits it, RSS counts it thrice
    grandchild = _FakeProcess(rss=700, pss=300)
    tree = _FakeProcess(rss=1000, pss=600, children=[_FakeProcess(rss=700, pss=300, children=[grandchild])])
    assert scaling.tree_memory(tree, "pss") == 600 + 300 + 300
    assert scaling.tree_memory(tree, "rss") == 1000 + 700 + 700
    ended = _FakeProcess(rss=1000, pss=600, children=[_FakeProcess(rss=5, pss=5, ended=True)])
    assert scaling.tree_memory(ended, "pss") == 600  # a worker that exits while read counts zero


def test_memory_kind_is_pss_on_linux() -> None:
    assert scaling.memory_kind() == ("pss" if sys.platform.startswith("linux") else "rss")


def test_a_recorded_command_reruns_the_measurement(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """doersch4's JSON holds a command that parses back to the same arguments (it once wrote
    ``--eval-limit None``, which argparse refuses), quoted for the shell."""
    from benchmarks import doersch4

    monkeypatch.setattr(doersch4, "measure", lambda *args: {"results": {}})
    monkeypatch.setattr(doersch4, "RESULT", tmp_path / "doersch4.json")
    argv = ["--world", "a world", "--out", str(tmp_path), "--steps", "60"]
    doersch4.main(argv)
    recorded = shlex.split(json.loads((tmp_path / "doersch4.json").read_text())["invocation"])
    assert recorded[:3] == ["python", "-m", "benchmarks.doersch4"]
    assert doersch4.parse(recorded[3:]) == doersch4.parse(argv)


def test_run_stamp_takes_the_commit_of_an_exported_copy(tmp_path: Path) -> None:
    assert common.run_stamp(tmp_path, commit="abc")["commit"] == "abc"  # tmp_path has no .git
    assert common.run_stamp(tmp_path)["commit"] is None
