"""Score plots draw their intervals and their chance level or floor (issue 38, item 4)."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from geofm_lib.report import plots  # noqa: E402


def test_recall_bars_draw_each_interval_and_keep_the_legend_off_the_bars():
    t = pd.DataFrame({"R@1": [20.0, "-"], "R@1 95% CI": ["10.0-30.0", "-"],
                      "chance R@1": [10.0, "-"], "R@5": [60.0, 80.0],
                      "R@5 95% CI": ["50.0-70.0", "70.0-90.0"], "chance R@5": [40.0, 50.0]},
                     index=["bigearthnet_s2", "xview"])
    fig = plots.recall_bars(t)
    ax = fig.axes[0]
    bars = [c for c in ax.containers if getattr(c, "errorbar", None) is not None]
    segments = [seg for c in bars for seg in c.errorbar.lines[2][0].get_segments()]
    spans = sorted((round(float(s[0][1]), 1), round(float(s[1][1]), 1)) for s in segments
                   if len(s) == 2 and np.isfinite(s).all())
    assert spans == [(10.0, 30.0), (50.0, 70.0), (70.0, 90.0)]
    legend = ax.get_legend()
    fig.canvas.draw()
    box = legend.get_window_extent()
    assert box.y0 >= ax.get_window_extent().y1 - 1  # above the axes: it hides no bar


def test_the_label_efficiency_curve_draws_its_floor():
    curve = pd.DataFrame({"encoder": ["trained", "trained"], "fraction": [0.1, 1.0],
                          "F2 micro": [40.0, 50.0]})
    curve.attrs["floor"] = 27.5
    fig = plots.probe_efficiency(curve)
    lines = fig.axes[0].get_lines()
    assert any(list(ln.get_ydata()) == [27.5, 27.5] for ln in lines)
    assert "label prior (floor)" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


def test_training_curves_show_chance_and_keep_the_last_point_in_the_frame():
    epochs = [{"step": 5, "epoch": 1, "val_loss": 2.9, "val_mean_R@1": 20.0,
               "val_mean_chance_R@1": 15.0},
              {"step": 10, "epoch": 2, "val_loss": 2.7, "val_mean_R@1": 25.0,
               "val_mean_chance_R@1": 15.0}]
    fig = plots.training_curves(list(range(1, 11)), [3.0 - 0.05 * i for i in range(10)], epochs,
                                total_steps=10)
    loss_ax, r1_ax = fig.axes
    assert loss_ax.get_xlim()[1] > 10
    assert any(list(ln.get_ydata()) == [15.0, 15.0] for ln in r1_ax.get_lines())
    lo, hi = r1_ax.get_xlim()
    assert lo < 1 and hi > 2


def test_per_class_chance_is_the_random_ranking_s_recall_by_hand():
    from geofm_lib.evaluation.metrics import per_class_chance

    # 4 labels; image 0 has labels {0, 1} (|y|/n = 2/4), image 1 has {0} (1/4), label 3 absent
    truth = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0]], dtype=bool)
    chance = per_class_chance(truth)
    assert chance[0] == (50.0 + 25.0) / 2 and chance[1] == 50.0 and chance[2] == 25.0
    assert np.isnan(chance[3])
    # a random ranking, many times: the empirical recall of label 0 approaches its chance
    from geofm_lib.evaluation.metrics import per_class_recall, rank

    rng = np.random.default_rng(0)
    hits = [per_class_recall(rank(rng.random((3, 4))), truth)[0][0] for _ in range(4000)]
    assert abs(np.mean(hits) - chance[0]) < 1.5


def test_per_class_bars_draw_the_label_prior_of_each_class():
    fig = plots.per_class_bars({"trained": [80.0, 10.0, 0.0], "rcf": [60.0, 5.0, 0.0]},
                               ["forest", "water", "urban"], support=[5, 2, 0],
                               floor=[71.4, 0.0, 0.0])
    ax = fig.axes[0]
    ticks = [c for c in ax.collections if c.get_label() == "label prior (floor)"]
    assert len(ticks) == 1 and sorted(ticks[0].get_offsets()[:, 0].tolist()) == [0.0, 71.4]
