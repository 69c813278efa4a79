"""classifiers.training: the batching rule, step budget, optimiser/schedule tables, early stopping, the loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from classifiers import training
from classifiers.training import (
    OPTIMIZERS,
    SCHEDULES,
    parse_schedule,
    EarlyStopping,
    History,
    Optimisation,
    Phase,
    Trainer,
    epochs_per_phase,
)
from classifiers.batches import drop_last, image_batches, phase_epochs, steps_per_epoch, tensor_batches
from featurize.preprocessing import Preprocessing


@pytest.mark.parametrize("n, batch, shuffle, dropped", [
    (33, 32, True, True), (33, 32, False, False), (32, 32, True, False), (1, 32, True, False), (9, 4, True, True),
    (10, 4, True, False),
])
def test_drop_last_rule(n, batch, shuffle, dropped):
    assert drop_last(n, batch, shuffle) is dropped
    assert steps_per_epoch(n, batch, shuffle) == (n // batch if dropped else math.ceil(n / batch))


@pytest.mark.parametrize("n", [1, 5, 8, 9, 12])
@pytest.mark.parametrize("shuffle", [False, True])
def test_tensor_and_image_batches_follow_the_same_rule(n, shuffle):
    """The precomputed path and the DataLoader path see the same batch sizes (one batching rule)."""
    feats = torch.arange(n, dtype=torch.float32)[:, None]
    images = np.zeros((n, 8, 8, 3), dtype=np.uint8)
    prep = Preprocessing(resize=None, crop=None, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    sizes = {}
    for name, batches in [
        ("tensor", tensor_batches(feats, range(n), 4, shuffle=shuffle, generator=torch.Generator().manual_seed(0))),
        ("image", image_batches(images, prep, range(n), 4, torch.device("cpu"), shuffle=shuffle,
                                generator=torch.Generator().manual_seed(0))),
    ]:
        sizes[name] = [len(idx) for idx, _ in batches()]
    assert sizes["tensor"] == sizes["image"]
    assert len(sizes["tensor"]) == steps_per_epoch(n, 4, shuffle)


def test_image_batches_shuffle_in_the_order_of_tensor_batches():
    """Precomputed and image paths see the same mini-batches epoch after epoch (same generator seed)."""
    n = 12
    feats = torch.arange(n, dtype=torch.float32)[:, None]
    images = np.zeros((n, 8, 8, 3), dtype=np.uint8)
    prep = Preprocessing(resize=None, crop=None, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    tensor = tensor_batches(feats, range(n), 8, shuffle=True, generator=torch.Generator().manual_seed(4))
    images_0, images_2 = (image_batches(images, prep, range(n), 8, torch.device("cpu"), num_workers=w, shuffle=True,
                                        generator=torch.Generator().manual_seed(4)) for w in (0, 2))
    for _ in range(3):
        expected = [idx.tolist() for idx, _ in tensor()]
        assert [idx.tolist() for idx, _ in images_0()] == expected == [idx.tolist() for idx, _ in images_2()]


def test_image_batches_leave_the_callers_rng_alone():
    """MixUp and dropout draw from torch's global RNG: iterating the loader (0 or 2 workers) must not consume it."""
    images = np.zeros((12, 8, 8, 3), dtype=np.uint8)
    prep = Preprocessing(resize=None, crop=None, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    for workers in (0, 2):
        batches = image_batches(images, prep, range(12), 4, torch.device("cpu"), num_workers=workers, shuffle=True,
                                generator=torch.Generator().manual_seed(1))
        torch.manual_seed(5)
        for _ in range(2):
            list(batches())
        after = torch.rand(3)
        torch.manual_seed(5)
        assert torch.equal(after, torch.rand(3)), f"{workers} workers consumed the global RNG"


def test_tensor_batches_reshuffle_and_cover_the_indices():
    feats = torch.arange(10, dtype=torch.float32)[:, None]
    batches = tensor_batches(feats, np.arange(10), 4, shuffle=True, generator=torch.Generator().manual_seed(0))
    first, second = [torch.cat([i for i, _ in batches()]).tolist() for _ in range(2)]
    assert sorted(first) == sorted(second) == list(range(10)) and first != second
    for idx, x in batches():
        assert torch.equal(x[:, 0], idx.float())


@pytest.mark.parametrize("epochs, n, batch, min_steps, expected", [
    (6, 10, 32, 60, 60), (6, 10, 32, 0, 6), (10, 240, 32, 60, 10), (3, 240, 32, 60, 8), (1, 65, 32, 10, 5),
])
def test_phase_epochs_meets_the_step_floor(epochs, n, batch, min_steps, expected):
    got = phase_epochs(epochs, n, batch, min_steps)
    assert got == expected
    assert got * steps_per_epoch(n, batch) >= min_steps


def test_tables_build_optimisers_and_schedules():
    param = nn.Parameter(torch.zeros(1))
    assert set(OPTIMIZERS) == {"adamw", "sgd"} and set(SCHEDULES) == {"cosine", "step", "constant"}
    opt = Optimisation("sgd", 0.1, 0.01, 0.0, "step").optimizer_for([param], [nn.Parameter(torch.zeros(1))])
    assert isinstance(opt, torch.optim.SGD) and [g["lr"] for g in opt.param_groups] == [0.1, 0.01]
    sched = SCHEDULES["step"](opt, 6, None)
    for _ in range(2):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01)
    assert SCHEDULES["constant"](opt, 6, None) is None


def test_step_k_schedule_decays_every_k_epochs():
    param = nn.Parameter(torch.zeros(1))
    opt = Optimisation("sgd", 1e-3, 1e-3, 0.0, "step:7").optimizer_for([param], [])
    name, k = parse_schedule("step:7")
    sched = SCHEDULES[name](opt, 25, k)
    lrs = []
    for _ in range(15):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:7] == [pytest.approx(1e-3)] * 7 and lrs[7:14] == [pytest.approx(1e-4)] * 7
    assert lrs[14] == pytest.approx(1e-5)
    with pytest.raises(ValueError, match="step:k"):
        parse_schedule("step:0")
    assert len(Optimisation("adamw", 1e-3, 1e-4, 0.0, "cosine").optimizer_for([param], []).param_groups) == 1


def test_early_stopping_public_interface():
    net = nn.Linear(1, 1)
    stopper = EarlyStopping()
    stopper.start_phase(2)
    losses = [3.0, 1.0, 2.0, 4.0]
    stops = []
    for epoch, value in enumerate(losses, 1):
        with torch.no_grad():
            net.weight.fill_(epoch)
        stops.append(stopper.update(epoch, value, 0.5 + epoch / 10, net))
    assert stops == [False, False, False, True]
    assert (stopper.best_epoch, stopper.best_loss, stopper.best_score) == (2, 1.0, pytest.approx(0.7))
    stopper.restore(net)
    assert net.weight.item() == 2.0
    stopper.start_phase(None)
    assert not any(stopper.update(e, 9.0, 0.0, net) for e in range(5, 20))


def _toy(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = (x[:, 0] > 0).long()
    return x, y


def test_trainer_history_steps_and_max_epochs():
    x, y = _toy()
    net = nn.Linear(4, 2)
    trainer = Trainer(net, "", Optimisation("adamw", 1e-2, 1e-3, 0.0, "cosine"), torch.device("cpu"), 2)
    train = tensor_batches(x, range(24), 8, shuffle=True, generator=torch.Generator().manual_seed(0))
    val = tensor_batches(x, range(24, 32), 8)
    history = History()
    epochs = trainer.run([Phase("a", (), 2), Phase("b", (), 3)], train, y, val=val, callbacks=[history], run="select")
    rows = history.rows
    assert epochs == 5 and sum(h["steps"] for h in rows) == 15
    assert [h["phase"] for h in rows] == ["a", "a", "b", "b", "b"]
    assert [h["epoch"] for h in rows] == [1, 2, 3, 4, 5] and {h["run"] for h in rows} == {"select"}
    assert all(h["steps"] == 3 and np.isfinite(h["val_loss"]) for h in rows)
    again = History()
    epochs = trainer.run([Phase("a", (), 2), Phase("b", (), 3)], train, y, callbacks=[again], max_epochs=3,
                         run="refit")
    assert epochs == 3 and [h["phase"] for h in again.rows] == ["a", "a", "b"]
    assert all(math.isnan(h["val_loss"]) for h in again.rows)


def test_early_stopping_as_a_callback_ends_the_phase_and_resets_per_phase():
    """A callback returning True ends the phase only; EarlyStopping restarts its patience in the next phase."""
    x, y = _toy()
    trainer = Trainer(nn.Linear(4, 2), "", Optimisation("sgd", 0.0, 0.0, 0.0, "constant"), torch.device("cpu"), 2)
    stopper, history = EarlyStopping(), History()
    train = tensor_batches(x, range(24), 8)
    val = tensor_batches(x, range(24, 32), 8)
    trainer.run([Phase("a", (), 5, patience=2), Phase("b", (), 5, patience=3)], train, y, val=val,
                callbacks=[history, stopper])
    assert [h["phase"] for h in history.rows] == ["a"] * 3 + ["b"] * 3, "lr 0: the loss never improves after epoch 1"
    assert stopper.best_epoch == 1


def test_divergence_names_epoch_and_learning_rate(monkeypatch):
    x, y = _toy()
    monkeypatch.setattr(training, "loss", lambda logits, target: (logits * float("nan")).sum())
    with pytest.raises(FloatingPointError, match=r"epoch 1 \(batch 1\).*lr=0\.1; try lr=0\.01"):
        Trainer(nn.Linear(4, 2), "", Optimisation("sgd", 0.1, 0.01, 0.0, "constant"), torch.device("cpu"), 2).run(
            [Phase("a", (), 1)], tensor_batches(x, range(32), 8), y)


def test_augmented_batches_do_not_depend_on_the_number_of_workers():
    """Each sample's random draws come from a seed drawn in the main process: 0 or 2 workers, same images."""
    from classifiers.augment import get_augmentation

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 40, 40, 3), dtype=np.uint8)
    prep = Preprocessing(resize=36, crop=32)
    transform, _ = get_augmentation("flip_crop", prep)
    seen = {}
    for workers in (0, 2):
        batches = image_batches(images, transform, range(12), 4, torch.device("cpu"), num_workers=workers,
                                shuffle=True, generator=torch.Generator().manual_seed(3))
        seen[workers] = [(idx.clone(), x.clone()) for _ in range(2) for idx, x in batches()]
    assert len(seen[0]) == 6
    for (i0, x0), (i2, x2) in zip(seen[0], seen[2]):
        assert torch.equal(i0, i2) and torch.equal(x0, x2)

    def image_in_epoch(epoch: int, index: int) -> torch.Tensor:
        for idx, x in seen[0][3 * epoch: 3 * epoch + 3]:
            if index in idx.tolist():
                return x[idx.tolist().index(index)]
        raise AssertionError(index)

    # augmentation is not switched off: one image comes out differently in the two epochs
    assert any(not torch.equal(image_in_epoch(0, i), image_in_epoch(1, i)) for i in range(12))


def test_per_stage_learning_rates_decay_below_the_deepest_stage():
    params = [nn.Parameter(torch.zeros(1)) for _ in range(4)]
    opt = Optimisation("sgd", 1.0, 0.1, 0.0, "constant", stage_decay=0.5).optimizer_for(
        [params[0]], params[1:], depths=[2, 1, 0])
    assert [g["lr"] for g in opt.param_groups] == [1.0, 0.1, 0.05, 0.025]
    assert [g["params"][0] is p for g, p in zip(opt.param_groups, [params[0], params[3], params[2], params[1]])]
    one = Optimisation("sgd", 1.0, 0.1, 0.0, "constant").optimizer_for([params[0]], params[1:], depths=[2, 1, 0])
    assert {g["lr"] for g in one.param_groups[1:]} == {0.1}


def test_a_refit_repeats_the_epochs_each_phase_reached_not_just_their_total():
    """A selection run whose first phase stopped early (patience) reached its best epoch inside the second phase:
    the refit runs the same number of epochs in each phase, not the total budget spent on the first."""
    x, y = _toy()
    phases = [Phase("frozen", (), 4, patience=1), Phase("full", (), 3)]
    trainer = Trainer(nn.Linear(4, 2), "", Optimisation("sgd", 0.0, 0.0, 0.0, "constant"), torch.device("cpu"), 2)
    select = History()
    trainer.run(phases, tensor_batches(x, range(24), 8), y, val=tensor_batches(x, range(24, 32), 8),
                callbacks=[select, EarlyStopping()], run="select")
    assert [r["phase"] for r in select.rows] == ["frozen", "frozen", "full", "full", "full"], "premise"
    budget = epochs_per_phase(phases, select.rows, up_to=4)
    assert budget == [2, 2]
    refit = History()
    trainer.run(phases, tensor_batches(x, range(32), 8), y, callbacks=[refit], max_epochs=budget, run="refit")
    assert [r["phase"] for r in refit.rows] == ["frozen", "frozen", "full", "full"]
