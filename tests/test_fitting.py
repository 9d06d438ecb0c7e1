"""The one supervised fitting loop (evaluation.fitting): named recipes, the batch order, the
schedule and the records that carry a recipe's values (issue 37, item 4)."""

from __future__ import annotations

import typing

import numpy as np
import pytest
import torch

from geofm_lib import records
from geofm_lib.config.schema import Config
from geofm_lib.evaluation import fitting, segmenter


def _fit(r: fitting.Recipe, n_train=10, batch_size=4, epochs=2, seed=0):
    w = torch.nn.Parameter(torch.zeros(1))
    groups = [{"params": [w], "lr": 0.1}]
    seen = []

    def batch_loss(idx):
        seen.append(idx.copy())
        return ((w - 1.0) ** 2).mean()

    history, _ = fitting.fit_epochs(groups, r, n_train=n_train, batch_size=batch_size,
                                    seed=seed, epochs=epochs, batch_loss=batch_loss,
                                    set_modes=lambda: None)
    return history, seen, groups, w


def test_an_unknown_recipe_names_the_choices():
    with pytest.raises(ValueError, match="unknown fitting recipe 'lpft'; choose lp-ft, "
                                         "new-head, segmentation"):
        fitting.recipe("lpft")


def test_the_config_offers_the_head_recipes():
    offered = typing.get_args(Config.model_fields["protocol_recipe"].annotation)
    assert offered == fitting.HEAD_RECIPES
    assert all(fitting.recipe(n).head_init in ("random", "probe") for n in offered)


def test_rates_per_group_follow_the_recipe():
    lp = fitting.recipe("lp-ft")
    assert (lp.head_lr(1e-2), lp.encoder_lr(1e-2)) == (1e-3, 1e-4)
    new = fitting.recipe("new-head")
    assert (new.head_lr(1e-2), new.encoder_lr(1e-2)) == (1e-2, 1e-2)
    seg = fitting.recipe("segmentation")
    assert (seg.head_lr(1e-2), seg.encoder_lr(1e-2)) == (1e-2, 1e-3)
    assert segmenter.RECIPE is seg


def test_a_batch_below_min_batch_is_skipped_and_every_image_is_seen_once():
    history, seen, _, _ = _fit(fitting.recipe("new-head"), n_train=9, batch_size=4, epochs=1)
    # 9 images in batches of 4: 4, 4, 1; the last (one image) is below min_batch 2
    assert [len(i) for i in seen] == [4, 4]
    assert history[0]["steps"] == 2
    seg, _, _, _ = _fit(fitting.recipe("segmentation"), n_train=9, batch_size=4, epochs=1)
    assert "steps" not in seg[0]  # mean over images, every batch taken (min_batch 1)


def test_the_order_is_seeded_and_sorted_within_batches_where_the_recipe_says():
    _, a, _, _ = _fit(fitting.recipe("new-head"), n_train=12, seed=5)
    _, b, _, _ = _fit(fitting.recipe("new-head"), n_train=12, seed=5)
    _, c, _, _ = _fit(fitting.recipe("new-head"), n_train=12, seed=6)
    assert all((x == y).all() for x, y in zip(a, b, strict=True))
    assert any((x != y).any() for x, y in zip(a, c, strict=True))
    assert any((np.diff(i) < 0).any() for i in a)  # new-head keeps the permutation's order
    _, s, _, _ = _fit(fitting.recipe("segmentation"), n_train=12, seed=5)
    assert all((np.diff(i) > 0).all() for i in s)
    # the segmentation order stream is [seed, 8]: the same draw as before the loop was shared
    first = np.sort(np.random.default_rng([5, 8]).permutation(12)[:4])
    assert (s[0] == first).all()


def test_the_cosine_schedule_ends_at_zero_and_constant_stays():
    _, _, groups, _ = _fit(fitting.recipe("segmentation"), n_train=8, batch_size=4, epochs=3)
    assert groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    _, _, groups, w = _fit(fitting.recipe("new-head"), n_train=8, batch_size=4, epochs=3)
    assert groups[0]["lr"] == 0.1
    assert 0 < float(w.detach()) <= 1.0 + 1e-6  # six AdamW steps towards 1 from 0


def test_an_unknown_schedule_is_refused():
    bad = fitting.Recipe(**{**fitting.recipe("new-head").__dict__, "schedule": "step"})
    with pytest.raises(ValueError, match="unknown schedule 'step'"):
        _fit(bad)


def test_records_carry_the_recipes_values():
    values = fitting.recipe("segmentation").values()
    assert values["weight_decay"] == 1e-4 and values["order_stream"] == [8]
    data = {"encoders": ["a"], "probes": ["linear"], "datasets": ["d"], "per_dataset": {},
            "mean_f2_micro": {"a/linear": 1.0}, "recipes": {"lp-ft": fitting.recipe(
                "lp-ft").values()}}
    rec = records.ProbesRecord.of(data)
    back = records.ProbesRecord.from_dict(rec.to_dict())
    assert back.recipes["lp-ft"]["encoder_lr_divisor"] == 100
    assert back.recipes["lp-ft"]["batchnorm"] == "frozen"
