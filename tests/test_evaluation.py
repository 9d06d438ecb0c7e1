"""The R@K protocol of seed 000, its exact chance level, and the other zero-shot metrics."""

import math

import numpy as np
import pytest

from geofm_lib import evaluation as ev

VOCAB = ("a", "b", "c", "d", "e", "f")


def _scores(rankings, n_labels=6):
    """Scores that produce the given label rankings (best first)."""
    s = np.zeros((len(rankings), n_labels))
    for i, order in enumerate(rankings):
        for pos, j in enumerate(order):
            s[i, j] = n_labels - pos
    return s


def test_recall_hits_when_any_true_label_is_in_the_top_k():
    truth = ev.label_matrix([["a"], ["b", "e"], ["f"], ["c", "d"]], VOCAB)
    ranking = ev.rank(_scores([
        [0, 1, 2, 3, 4, 5],   # a first: hit at 1
        [3, 4, 0, 1, 2, 5],   # e second: hit at 2 (any true label counts)
        [0, 1, 2, 3, 4, 5],   # f last: hit only at 6
        [5, 4, 1, 0, 2, 3],   # c fifth: hit at 5
    ]))
    assert ev.hits_at_k(ranking, truth, 1).tolist() == [True, False, False, False]
    assert ev.hits_at_k(ranking, truth, 2).tolist() == [True, True, False, False]
    assert ev.recall_at_k(ranking, truth, 1) == pytest.approx(25.0)
    assert ev.recall_at_k(ranking, truth, 2) == pytest.approx(50.0)
    assert ev.recall_at_k(ranking, truth, 5) == pytest.approx(75.0)


def test_dash_where_k_is_at_least_the_number_of_labels():
    truth = ev.label_matrix([["a"], ["c"]], VOCAB[:5])
    ranking = ev.rank(np.random.default_rng(0).random((2, 5)))
    assert ev.recall_at_k(ranking, truth, 4) is not None
    assert ev.recall_at_k(ranking, truth, 5) is None   # k == n: trivially 100 %
    assert ev.recall_at_k(ranking, truth, 10) is None  # k > n
    assert ev.chance_recall_at_k(truth, 5) is None
    table = ev.results_table({"x": ev.score_dataset("x", VOCAB[:5], np.random.default_rng(1)
                                                    .random((2, 5)), truth, np.arange(2))})
    assert table.loc["x", "R@5"] == "-" and table.loc["x", "R@10"] == "-"
    assert table.loc["x", "R@1"] != "-"


def test_images_without_labels_are_left_out_and_counted():
    truth = ev.label_matrix([["a"], [], []], VOCAB)
    ranking = ev.rank(_scores([[0, 1, 2, 3, 4, 5]] * 3))
    assert ev.recall_at_k(ranking, truth, 1) == 100.0
    res = ev.score_dataset("x", VOCAB, _scores([[0, 1, 2, 3, 4, 5]] * 3), truth, np.arange(3))
    assert res.no_labels == 2


def test_chance_formula_matches_hand_values_and_simulation():
    # one true label of n: k/n
    assert ev.chance_hit_probability(10, 1, 3)[0] == pytest.approx(0.3)
    # two of four, k=1: 1/2; k=2: 1 - C(2,2)/C(4,2) = 5/6
    assert ev.chance_hit_probability(4, 2, 1)[0] == pytest.approx(0.5)
    assert ev.chance_hit_probability(4, 2, 2)[0] == pytest.approx(5 / 6)
    rng = np.random.default_rng(0)
    n_labels, n_img = 13, 400
    counts = rng.integers(1, 5, n_img)
    truth = np.zeros((n_img, n_labels), bool)
    for i, m in enumerate(counts):
        truth[i, rng.choice(n_labels, m, replace=False)] = True
    for k in (1, 5, 10):
        exact = ev.chance_recall_at_k(truth, k)
        sims = [ev.recall_at_k(ev.rank(rng.random((n_img, n_labels))), truth, k)
                for _ in range(300)]
        assert np.mean(sims) == pytest.approx(exact, abs=0.6), k


def test_bootstrap_interval_brackets_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(1)
    small = rng.random(50) < 0.3
    large = rng.random(2000) < 0.3
    lo, hi = ev.bootstrap_ci(small.astype(float), seed=0)
    assert lo < small.mean() < hi
    lo2, hi2 = ev.bootstrap_ci(large.astype(float), seed=0)
    assert (hi2 - lo2) < (hi - lo) / 3
    assert ev.bootstrap_ci(np.ones(10)) == (1.0, 1.0)


def test_text_to_image_recall_and_chance():
    truth = ev.label_matrix([["a"], ["b"], ["a", "b"], ["c"]], ("a", "b", "c"))
    scores = np.array([[0.9, 0.1, 0.0],   # image 0 is the top image for a
                       [0.0, 0.2, 0.9],   # image 1 is the top image for c (wrong)
                       [0.1, 0.9, 0.1],   # image 2 is the top image for b (right)
                       [0.2, 0.0, 0.1]])
    r1, chance1 = ev.text_to_image_recall(scores, truth, 1)
    assert r1 == pytest.approx(200 / 3)  # a and b hit, c misses
    # positives per label: a 2, b 2, c 1 of 4 images -> chance at k=1: (0.5 + 0.5 + 0.25) / 3
    assert chance1 == pytest.approx(100 * 1.25 / 3)


def test_predicted_sets_per_class_recall_and_average_precision():
    truth = ev.label_matrix([["a", "b"], ["c"]], ("a", "b", "c"))
    scores = np.array([[0.9, 0.1, 0.5], [0.1, 0.2, 0.7]])
    pred = ev.predicted_sets(ev.rank(scores), truth)
    assert pred.tolist() == [[True, False, True], [False, False, True]]  # top-|y| labels
    recall, support = ev.per_class_recall(ev.rank(scores), truth)
    assert support.tolist() == [1, 1, 1]
    assert recall.tolist() == [100.0, 0.0, 100.0]
    ap = ev.average_precision(scores, truth)
    assert ap[0] == pytest.approx((1 / 1 + 2 / 3) / 2) and ap[1] == 1.0


def test_unknown_label_is_an_error_naming_it():
    with pytest.raises(ValueError, match="'zebra'"):
        ev.label_matrix([["zebra"]], VOCAB)


def test_summary_means_only_over_defined_datasets():
    rng = np.random.default_rng(2)
    t5 = ev.label_matrix([["a"], ["b"]], VOCAB[:5])
    t6 = ev.label_matrix([["a"], ["f"]], VOCAB)
    res = {"five": ev.score_dataset("five", VOCAB[:5], rng.random((2, 5)), t5, np.arange(2)),
           "six": ev.score_dataset("six", VOCAB, rng.random((2, 6)), t6, np.arange(2))}
    s = ev.summary_metrics(res)
    assert s["per_dataset"]["five"]["R@5"] is None
    assert s["mean_R@5"] == pytest.approx(res["six"].recall[5])
    assert not math.isnan(s["mean_chance_R@1"])


def test_multi_caption_recall_counts_any_own_caption():
    # 3 images, captions owned 0,0,1,1,2 (two images with two captions)
    owner = np.array([0, 0, 1, 1, 2])
    sim = np.array([[0.1, 0.9, 0.0, 0.2, 0.3],   # image 0: its 2nd caption first -> i2t hit@1
                    [0.9, 0.0, 0.1, 0.2, 0.3],   # image 1: own captions ranked 4th and 3rd
                    [0.0, 0.1, 0.2, 0.3, 0.05]])  # image 2: own caption ranked last (5th)
    i2t, t2i, hits = ev.caption_recall(sim, owner, ks=(1, 3))
    assert i2t == {1: pytest.approx(100 / 3), 3: pytest.approx(200 / 3)}
    assert hits[:, 0].tolist() == [True, False, False]
    # text to image @1: only caption 1 ranks its own image (0) first; @3 every image is in
    # the top 3 of 3
    assert t2i[1] == pytest.approx(20.0)
    assert t2i[3] == pytest.approx(100.0)


def test_one_bootstrap_gives_the_intervals_the_three_copies_gave():
    """The single bootstrap (evaluation.bootstrap) replaced three copies that drew their
    indices differently (one (B, n) matrix; a loop of n-vectors); the draws and the intervals
    are the same to the bit, so no printed interval moved."""
    from geofm_lib.evaluation import bootstrap_metrics, multilabel_metrics

    values = np.random.default_rng(1).random(257)
    rng = np.random.default_rng(4)
    means = np.take(values, rng.integers(0, 257, size=(300, 257))).mean(axis=1)
    assert ev.bootstrap_ci(values, n_boot=300, seed=4) == tuple(
        float(q) for q in np.quantile(means, [(1 - 0.95) / 2, 1 - (1 - 0.95) / 2]))

    y_true = np.random.default_rng(2).random((61, 5)) > 0.6
    y_pred = np.random.default_rng(3).random((61, 5)) > 0.5
    rng = np.random.default_rng(7)
    draws = []
    for _ in range(50):
        idx = rng.integers(0, 61, 61)
        draws.append(multilabel_metrics(y_true[idx], y_pred[idx])["f2_micro"])
    ci = bootstrap_metrics(y_true, y_pred, n_boot=50, seed=7)["f2_micro"]
    assert ci == [float(np.quantile(draws, 0.025)), float(np.quantile(draws, 0.975))]


def test_paired_f2_difference_is_narrower_than_the_two_intervals():
    from geofm_lib.evaluation.probes import bootstrap_metrics, paired_f2_difference

    rng = np.random.default_rng(0)
    y = rng.random((200, 6)) < 0.3
    noise = rng.random((200, 6))
    worse = np.where(noise < 0.30, ~y, y)  # 30 % of the cells flipped
    better = np.where(noise < 0.20, ~y, y)  # a subset of those: better on every image
    d, ci = paired_f2_difference(y, better, worse, n_boot=300, seed=1)
    a = bootstrap_metrics(y, better, n_boot=300, seed=1)["f2_micro"]
    b = bootstrap_metrics(y, worse, n_boot=300, seed=1)["f2_micro"]
    assert d > 0 and ci[0] > 0 and ci[0] <= d <= ci[1]
    assert ci[1] - ci[0] < min(a[1] - a[0], b[1] - b[0])  # the shared images cancel out
    same, same_ci = paired_f2_difference(y, worse, worse, n_boot=50)
    assert same == 0 and same_ci == [0.0, 0.0]
