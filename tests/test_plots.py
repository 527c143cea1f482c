"""Bench plots read at a glance: one style per method grouped by stage, legend outside the data, ratio axes in %
fitted to the ratios run, tick labels that do not collide, identical values still visible, a stage breakdown
that stays readable at 40+ rows; and report.md's Frames row for ``--video`` runs."""

from __future__ import annotations

import itertools

import pytest

pytest.importorskip("matplotlib")

from tokpress.eval.bench.figures import flops_figure, stage_figure, ttft_figure  # noqa: E402
from tokpress.eval.bench.tables import render_markdown  # noqa: E402
from tokpress.eval.plots import method_styles  # noqa: E402

OUTER = ["uniform", "random", "frames", "evs", "divprune", "visionzip", "fastvid", "vidcom2", "scissor"]
INNER = ["fastv", "pdrop", "framefusion", "sttm"]
BOTH = ["holitom", "dycoke", "prunevid", "flashvid", "evs+fastv"]
METHODS = OUTER + INNER + BOTH  # 18, plus the oracle
RATIOS = (0.5, 0.25, 0.1)


def _records(methods=METHODS, ratios=RATIOS, same_flops: bool = True) -> list[dict]:
    """One uncompressed row, then per ratio the oracle and every method; outer methods share their FLOPs."""
    rows = [_row("none", 1.0, 100.0, 1e12)]
    for ratio in ratios:
        rows.append(_row("oracle", ratio, 40 + 100 * ratio, 1e12 * ratio))
        for k, m in enumerate(methods):
            flops = 1e12 * ratio if same_flops and m in OUTER else 1e12 * (ratio + 0.01 * (k + 1))
            rows.append(_row(m, ratio, 41 + 100 * ratio + k, flops))
    return rows


def _row(method: str, ratio: float, ttft: float, flops: float) -> dict:
    stages = {"video_decode": 5.0, "preprocess": 2.0, "vision": 10.0, "compression": 1.0, "first_decode": 1.0}
    return {
        "model": "m",
        "method": method,
        "ratio": ratio,
        "ttft_ms": {"median": ttft, "min": ttft - 1, "max": ttft + 2},
        "stages_ms": stages | {"prefill": ttft - 19.0},
        "flops_fastv": flops,
        "flops_exact": flops * 1.5,
    }


def _data_points(ax) -> list[tuple[float, float]]:
    """Display coordinates of every marker drawn on ``ax``."""
    pts = []
    for line in ax.get_lines():
        if line.get_marker() in (None, "None", "", " ") or len(line.get_xdata()) == 0:
            continue
        pts += [tuple(p) for p in ax.transData.transform(list(zip(line.get_xdata(), line.get_ydata())))]
    return pts


def test_styles_unique_and_grouped_by_stage():
    styles = method_styles(["none", "oracle", *METHODS, "m1", "m2"])  # 20 methods + oracle
    assert "none" not in styles and len(styles) == 21
    triples = [(s["color"], s["marker"], str(s["linestyle"])) for s in styles.values()]
    assert len(set(triples)) == len(triples)
    assert {styles[m]["linestyle"] for m in OUTER} == {"-"}
    assert {styles[m]["linestyle"] for m in INNER} == {"--"}
    assert {styles[m]["linestyle"] for m in BOTH} == {"-."}
    assert styles["oracle"]["color"] == "black"
    # within one stage no two methods share a colour while the palette lasts (9 outer methods, 9 colours)
    assert len({styles[m]["color"] for m in OUTER}) == len(OUTER)
    assert len({styles[m]["marker"] for m in OUTER}) == len(OUTER)


def test_legend_outside_data_and_axes():
    fig = ttft_figure(_records())
    fig.canvas.draw()
    (ax,) = fig.axes
    legend = fig.legends[0]
    box = legend.get_window_extent()
    assert not box.overlaps(ax.get_window_extent())
    assert not any(box.contains(x, y) for x, y in _data_points(ax))
    assert len(_data_points(ax)) >= len(METHODS) * len(RATIOS)


def test_ratio_axis_fits_data_in_percent():
    fig = ttft_figure(_records())
    fig.canvas.draw()
    (ax,) = fig.axes
    lo, hi = ax.get_xlim()
    assert 10 - 0.2 * 40 <= lo < 10 and 50 < hi <= 50 + 0.2 * 40  # data at 10..50 %, not 0..105
    assert [t.get_text() for t in ax.get_xticklabels()] == ["10%", "25%", "50%"]


def test_tick_labels_do_not_overlap_for_close_ratios():
    fig = ttft_figure(_records(methods=["fastv", "uniform"], ratios=(0.25, 0.2525, 0.5, 0.1)))
    fig.canvas.draw()
    (ax,) = fig.axes
    shown = [t for t in ax.get_xticklabels() if t.get_visible() and t.get_text()]
    boxes = [t.get_window_extent() for t in shown]
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b)
    texts = [t.get_text() for t in shown]
    assert "10%" in texts and "50%" in texts and len(texts) == 3  # one of 25% / 25.25% hidden


def test_identical_values_do_not_hide_each_other():
    fig = flops_figure(_records())
    fig.canvas.draw()
    ax = fig.axes[0]
    pts = [(round(x, 1), round(y, 1)) for x, y in _data_points(ax)]
    assert len(set(pts)) == len(pts)  # every marker at its own display position
    assert "identical" in ax.get_title()
    assert ax.get_ylim()[1] < 120  # % of the uncompressed FLOPs
    assert ax.yaxis.get_major_formatter()(50, 0) == "50%"


def test_stage_breakdown_readable_at_43_rows():
    records = _records(methods=METHODS[:13])  # 1 + 3 x (1 + 13) = 43 rows
    assert len(records) == 43
    fig = stage_figure(records)
    fig.canvas.draw()
    width, height = fig.get_size_inches()
    assert 0.5 <= width / height <= 3.5 and height <= 22
    panels = [ax for ax in fig.axes if ax.axison]
    assert len(panels) == 3  # one per ratio
    for ax in panels:
        labels = [t.get_window_extent() for t in ax.get_yticklabels() if t.get_text()]
        assert len(labels) == 15  # uncompressed + oracle + 13 methods
        for a, b in zip(labels, labels[1:]):
            assert not a.overlaps(b)


def test_stage_breakdown_height_capped():
    many = _records(methods=[f"m{i}" for i in range(120)], ratios=(0.5,))
    width, height = stage_figure(many).get_size_inches()
    assert height <= 22


@pytest.mark.parametrize(
    ("environment", "records", "expected"),
    [
        ({"video": "/data/clip.mp4", "frames": "24"}, [], "24"),
        ({"video": "/data/clip.mp4"}, [{"model": "m", "method": "none", "ratio": 1.0, "frames": 12}], "12"),
        ({"video": "generated moving square (16 frames)"}, [], "16"),
        ({"video": "/data/clip.mp4"}, [], "—"),
    ],
)
def test_frames_row(environment, records, expected):
    md = render_markdown(records, environment, "tokpress bench --video /data/clip.mp4")
    assert f"| Frames | {expected} |" in md
