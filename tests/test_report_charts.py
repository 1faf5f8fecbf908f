"""The report's SVG charts: tick values, linear and log scales, the outlier clip, escaping."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from cq.report.charts import (Axis, curve_chart, labels_apart, line_chart, log_ticks, nice_ticks, outlier_cap, parts_bar,
                             strip_chart, tick_labels)
from cq.report.fmt import fmt_time


@pytest.mark.parametrize("lo, hi, expected", [
    (0, 1, [0, 0.2, 0.4, 0.6, 0.8, 1.0]),
    (0, 10, [0, 2, 4, 6, 8, 10]),
    (3, 97, [20, 40, 60, 80]),
    (-0.03, 0.62, [0, 0.2, 0.4, 0.6]),
    (1234, 1236, [1234, 1234.5, 1235, 1235.5, 1236]),
])
def test_nice_ticks_are_round_and_inside(lo, hi, expected):
    assert nice_ticks(lo, hi) == pytest.approx(expected)


def test_nice_ticks_step_is_1_2_or_5_times_a_power_of_ten():
    for lo, hi in [(0, 7.3), (0.001, 0.0042), (-500, 2500), (17, 1017)]:
        ticks = nice_ticks(lo, hi)
        step = ticks[1] - ticks[0]
        mantissa = step / 10 ** math.floor(math.log10(step))
        assert min(abs(mantissa - m) for m in (1, 2, 5)) < 1e-9
        assert lo <= ticks[0] < lo + step and hi - step < ticks[-1] <= hi
        assert 3 <= len(ticks) <= 11


@given(st.floats(-1e6, 1e6), st.floats(1e-6, 1e6))
@example(0.99, 0.09)  # a score-over-best axis: 1 and 1.05 alone before
def test_nice_ticks_are_three_or_more_round_values_inside(lo, width):
    hi = lo + width
    assume(hi > lo and (hi - lo) / max(abs(lo), abs(hi), 1e-300) > 1e-9)
    ticks = nice_ticks(lo, hi)
    assert 3 <= len(ticks) <= 11 and all(lo - 1e-9 * width <= t <= hi + 1e-9 * width for t in ticks)
    steps = {round(b - a, 9) for a, b in zip(ticks, ticks[1:])}
    step = (ticks[-1] - ticks[0]) / (len(ticks) - 1)
    assert max(steps) - min(steps) <= 1e-6 * step
    mantissa = step / 10 ** math.floor(math.log10(step) + 1e-9)
    assert min(abs(mantissa - m) for m in (1, 2, 5, 10)) < 1e-6


def test_nice_ticks_of_an_empty_or_bad_range():
    assert nice_ticks(5, 5) == [5] and nice_ticks(math.nan, 1) == [] and nice_ticks(2, 1) == [2]


def test_log_ticks():
    assert log_ticks(1, 1000) == [1, 3, 10, 30, 100, 300, 1000]  # 1-2-5 would be 10 labels
    assert log_ticks(0.02, 5) == pytest.approx([0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5])
    assert log_ticks(2, 9) == [2, 4, 6, 8]  # 1-2-5 would be 2 labels: linear steps
    assert log_ticks(1.01, 1.06) == pytest.approx([1.02, 1.04, 1.06])  # within a factor of 3
    assert log_ticks(0.95, 12.5) == [1, 2, 5, 10]  # a 12x outlier: 1-2-5, not 2, 4, ..., 12
    assert len(log_ticks(1e-6, 1e6)) <= 8 and all(t > 0 for t in log_ticks(1e-6, 1e6))
    assert log_ticks(0, 10) == [] and log_ticks(5, 1) == []


def test_linear_axis_maps_the_padded_range_onto_the_pixels():
    axis = Axis([10, 20, 30], 100, 600)
    assert axis.lo == pytest.approx(10 - 0.8) and axis.hi == pytest.approx(30 + 0.8)
    assert axis(axis.lo) == pytest.approx(100) and axis(axis.hi) == pytest.approx(600)
    assert axis(20) == pytest.approx(350)
    assert axis(30) - axis(20) == pytest.approx(axis(20) - axis(10))


def test_log_axis_puts_equal_ratios_at_equal_distances():
    axis = Axis([1, 10, 100], 0, 500, log=True)
    assert axis(10) - axis(1) == pytest.approx(axis(100) - axis(10))
    assert axis(10) == pytest.approx(250)
    assert Axis([0, -1, 5, 50], 0, 100, log=True).lo > 0  # non-positive values have no place


def test_axis_of_one_value_or_none_still_has_a_width():
    for axis in (Axis([7, 7], 0, 100), Axis([], 0, 100), Axis([3], 0, 100, log=True), Axis([math.nan], 0, 1)):
        assert axis.hi > axis.lo and math.isfinite(axis(axis.lo))


def test_outlier_cap_and_a_clipped_axis():
    values = [0.1, 0.12, 0.15, 0.2, 0.22, 0.25, 2469.8]
    cap = outlier_cap(values)
    assert 0.25 < cap < 2469.8
    assert outlier_cap([0.1, 0.2, 0.3, 0.4]) is None and outlier_cap([1, 1e9]) is None  # too few to judge
    axis = Axis(values, 0, 500, cap=cap)
    assert axis.hi == pytest.approx(cap) and axis(2469.8) == 500 and axis.clipped(2469.8)
    assert axis(0.25) > 0.1 * 500  # the real values keep the width, not a smear at 0
    assert not axis.clipped(0.25) and max(axis.ticks()) <= cap


def test_strip_chart_marks_clipped_outliers_and_escapes_names():
    svg = strip_chart([("<b>m</b>", [0.1, 0.12, 0.15, 0.2, 0.22, 0.25, 2469.8], 0.2)], label="gap", clip=True,
                      fmt=lambda v: f"{100 * v:.0f}%")
    assert svg.count("<circle") == 6 and svg.count('class="outlier"') == 1
    assert "1 value(s) beyond" in svg and "clipped at" in svg
    assert "&lt;b&gt;m&lt;/b&gt;" in svg and "<b>" not in svg
    unclipped = strip_chart([("m", [0.1, 2469.8], 0.2)], label="gap", fmt=str)
    assert unclipped.count("<circle") == 2 and 'class="outlier"' not in unclipped


def test_curve_chart_has_both_axes_and_marks_init_and_best():
    svg = curve_chart([100.0, 80.0, 90.0, 70.0, 75.0], 3, fmt=lambda v: f"{v:.0f}")
    ys = [float(t) for t in re.findall(r'class="name">([\d.]+)<', svg)]
    xs = [float(t) for t in re.findall(r'class="tick">([\d.]+)<', svg)]
    assert ys and min(ys) >= 70 - 2 and max(ys) <= 100 + 2 and len(ys) >= 3
    assert xs[0] == 0 and xs[-1] <= 4 and len(xs) >= 3
    assert "init 100 at epoch 0" in svg and "best 70 at epoch 3" in svg


def test_line_chart_has_a_legend_and_a_line_per_series():
    svg = line_chart({"kmeans": [1.0, 2.0, 3.0], "octree": [0.5, math.nan, 0.7]}, ["1", "2", "3"],
                     label="time", fmt=str, x_name="run", links=["#run-1", "#run-2", "#run-3"])
    assert svg.count("<polyline") == 2 and svg.count('class="legend"') == 2 and svg.count("<circle") == 5
    assert "<title>octree, run 3: 0.7</title>" in svg and svg.count('<a href="#run-3">') == 2


def test_parts_bar_widths_are_the_parts_shares():
    svg = parts_bar([("MSE", 10.0), ("max cost", 30.0), ("mean cost", 60.0)], fmt=str, width=100)
    widths = [float(w) for w in re.findall(r'width="([\d.]+)" height', svg)[1:]]
    assert widths == pytest.approx([10, 30, 60])
    assert parts_bar([("MSE", 0.0)], fmt=str) == ""


def test_tick_labels_never_repeat():
    curve = [37.4 - 0.02 * i for i in range(41)]  # a cnn that gained 2%: 37.4 down to 36.6
    svg = curve_chart(curve, 40, fmt=lambda v: f"{v:,.0f}")
    ys = re.findall(r'class="name">([^<]+)<', svg)
    assert len(ys) >= 3 and len(set(ys)) == len(ys), ys
    assert tick_labels([1.0, 2.0, 3.0], lambda v: f"{v:.0f}") == ["1", "2", "3"]  # fmt kept when distinct
    assert tick_labels([0.1, 0.15, 0.2], lambda v: f"{v:.1f}") == ["0.10", "0.15", "0.20"]


@pytest.mark.parametrize("values", [[1.0, 1.01, 1.02, 1.04], [1.0, 1.2, 1.5, 12.0], [1.0, 1.0, 1.0]])
def test_a_ratio_axis_labels_its_reference(values):
    svg = strip_chart([("m", values, 1.0)], label="score / best", fmt=lambda v: f"{v:.3g}", log=True, reference=1.0)
    ticks = re.findall(r'class="tick">([^<]+)<', svg)
    assert "1" in ticks and len(set(ticks)) == len(ticks), ticks
    xs = sorted(float(x) for x in re.findall(r'<line x1="([\d.]+)"[^>]*class="grid"', svg))
    assert all(b - a >= 30 for a, b in zip(xs, xs[1:])), xs  # labels stay apart


def test_dots_name_their_image_and_link_to_its_row():
    tips = [("<b>a</b>.png", "#r-1"), ("b.png", "#r-2"), ("c.png", None)]
    svg = strip_chart([("m", [0.1, 0.2, 0.3], 0.2, tips)], label="gap", fmt=lambda v: f"{v:.1f}")
    assert svg.count("<circle") == 3 and svg.count("<title>") == 3 + 1  # + the marker's
    assert '<a href="#r-1"><circle' in svg and "<title>&lt;b&gt;a&lt;/b&gt;.png: 0.1</title>" in svg
    assert '<a href="#r-2">' in svg and "<title>c.png: 0.3</title>" in svg and svg.count("<a ") == 2


def test_log_ticks_take_the_densest_set_whose_labels_fit():
    assert log_ticks(0.02, 5, fits=lambda ticks: len(ticks) < 8) == pytest.approx([0.03, 0.1, 0.3, 1, 3])
    assert log_ticks(0.002, 5, fits=lambda ticks: False) == pytest.approx([0.01, 0.1, 1])  # decades at least


@pytest.mark.parametrize("lo, hi", [(0.02, 5.0), (0.004, 0.9), (0.3, 40.0), (0.05, 0.6)])
def test_time_axis_labels_never_touch(lo, hi):
    """The report's time chart (log axis, labels like '100 ms'): neighbouring tick labels keep
    a gap; at 1,400 px '50 ms 100 ms200 ms' touched."""
    values = list(np.geomspace(lo, hi, 40))
    svg = str(strip_chart([("direct", values, float(np.median(values)))], label="t", fmt=fmt_time, log=True))
    ticks = [(float(x), text) for x, text in re.findall(r'<text x="([\d.]+)" y="[\d.]+" class="tick">([^<]*)<', svg)]
    assert len(ticks) >= 3
    assert labels_apart([x for x, _ in ticks], [t for _, t in ticks])
