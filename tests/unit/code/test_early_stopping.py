"""The best-epoch rule and patience (code/early_stopping.py) on sequences of val figures, in MONAI's style
(earlystop_handler's test): scores in, stop or not and the best epoch out; and the policy's state as checkpoints
keep it. Milliseconds: no training."""
import math

import pytest
import torch

from early_stopping import EarlyStopping

pytestmark = pytest.mark.torch26  # code/'s own checks: make test-torch26 runs them on torch 2.6

NAN = math.nan


def run(patience, figures, model=None):
    """Feed (val AUC, val loss) per epoch until the policy says stop: (the epoch it stopped after or None, policy)."""
    policy, model = EarlyStopping(patience), model or torch.nn.Linear(2, 2)
    for epoch, (auc, loss) in enumerate(figures, 1):
        policy.update(epoch, {"auc": auc, "loss": loss}, model)
        if policy.should_stop:
            return epoch, policy
    return None, policy


@pytest.mark.parametrize("patience, figures, stopped_after, best_epoch", [
    (2, [(0.8, 0.5), (0.7, 0.6), (0.75, 0.4)], 3, 1),                  # two epochs without a better AUC
    (2, [(0.8, 0.5), (0.7, 0.6), (0.9, 0.7), (0.85, 0.3)], None, 3),   # a better AUC resets the count
    (1, [(0.8, 0.5), (0.8, 0.5)], 2, 1),                               # the same figures are not better
    (3, [(1.0, 0.3), (1.0, 0.2), (1.0, 0.25), (1.0, 0.2)], None, 2),   # a saturated AUC: the lower loss wins ties
    (1, [(1.0, 0.2), (0.99, 0.01)], 2, 1),                             # the AUC first: a lower loss does not beat it
    (0, [(0.9, 0.1)] + [(0.5, 0.9)] * 20, None, 1),                    # patience 0: never stops
    (2, [(NAN, 0.6), (NAN, 0.5), (NAN, 0.55), (NAN, 0.7)], 4, 2),      # no AUC (val of one class): the loss decides
    (2, [(NAN, 0.1), (0.6, 0.9)], None, 2),                            # any AUC beats none, whatever the loss
    (1, [(0.6, 0.9), (NAN, 0.1)], 2, 1),                               # and none never beats one
    (2, [(math.inf, 0.1), (0.7, 0.5)], None, 2),                       # an infinite AUC counts as none
])
def test_sequences_of_val_figures_give_the_stop_and_the_best_epoch(patience, figures, stopped_after, best_epoch):
    stopped, policy = run(patience, figures)
    assert stopped == stopped_after
    assert policy.best_epoch == best_epoch
    assert policy.best_val == {"auc": figures[best_epoch - 1][0], "loss": figures[best_epoch - 1][1]}


def test_update_says_whether_the_epoch_is_the_new_best_and_counts_the_others():
    policy, model = EarlyStopping(patience=3), torch.nn.Linear(2, 2)
    assert [policy.update(e, {"auc": a, "loss": 0.5}, model) for e, a in enumerate([0.7, 0.6, 0.8, 0.8], 1)] == [
        True, False, True, False]
    assert (policy.best_epoch, policy.bad_epochs, policy.best_score) == (3, 1, [0.8, -0.5])


def test_the_kept_weights_are_a_cpu_copy_of_the_best_epochs():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    policy = EarlyStopping()
    policy.update(1, {"auc": 0.9, "loss": 0.2}, model)
    kept = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model[0].weight.add_(1.0)  # the model trains on; a worse epoch follows
    policy.update(2, {"auc": 0.5, "loss": 0.9}, model)
    assert set(policy.best_weights) == set(kept)  # buffers too (running statistics, num_batches_tracked)
    for name, value in kept.items():
        assert torch.equal(policy.best_weights[name], value) and policy.best_weights[name].device.type == "cpu"


def test_nothing_is_kept_before_the_first_validation():
    policy = EarlyStopping(patience=2)
    assert (policy.best_epoch, policy.best_weights, policy.should_stop) == (0, None, False)


def test_the_state_goes_through_a_checkpoint_and_the_run_goes_on_as_before():
    model = torch.nn.Linear(2, 2)
    _, policy = run(3, [(0.8, 0.4), (0.7, 0.3)], model)
    state = policy.state_dict()
    # the names a checkpoint's train_state has always used (CHECKPOINT_FORMAT 2)
    assert set(state) == {"best_score", "best_epoch", "bad_epochs", "best_val", "best_model"}
    restored = EarlyStopping(patience=3)
    restored.load_state_dict(dict(state, epoch=2, history=[]))  # the rest of train_state is ignored
    assert (restored.best_score, restored.best_epoch, restored.bad_epochs, restored.best_val) == (
        [0.8, -0.4], 1, 1, {"auc": 0.8, "loss": 0.4})
    assert restored.best_weights is state["best_model"] and restored.patience == 3
    for p in (policy, restored):  # both go on identically: two more epochs without improvement stop them
        p.update(3, {"auc": 0.79, "loss": 0.1}, model)
        assert p.should_stop == (p.bad_epochs >= 3) and p.bad_epochs == 2
        p.update(4, {"auc": 0.5, "loss": 0.1}, model)
        assert p.should_stop


def test_patience_comes_from_the_run_not_the_checkpoint():
    """A plan changed on resume (epochs cut or set anew) brings its own patience (engine.Trainer.set_plan)."""
    _, policy = run(5, [(0.8, 0.4), (0.7, 0.3), (0.7, 0.3)])
    restored = EarlyStopping(patience=2)
    restored.load_state_dict(policy.state_dict())
    assert restored.should_stop and not policy.should_stop
