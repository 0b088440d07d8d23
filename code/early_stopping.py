"""Which epoch's weights a run keeps, and when it has waited long enough for a better one: one small policy object
(as MONAI's ``EarlyStopHandler`` and Keras' ``EarlyStopping(restore_best_weights=True)``), called explicitly by
``engine.Trainer.fit`` after each validation and saved in every checkpoint (``state_dict``/``load_state_dict``).

The best epoch has the highest val AUC; ties (a saturated AUC of 1.0, a small val split) go to the lower val loss;
without an AUC (val holds one class, so the AUC is NaN) the lower val loss decides. ``patience`` epochs in a row
without a better one end the run (0: never).
"""
import math


class EarlyStopping:
    """The best epoch so far (its score, epoch, val figures and weights on the CPU) and the epochs since it."""

    def __init__(self, patience=0):
        self.patience = patience
        self.best_score = [-math.inf, -math.inf]  # [val AUC, -val loss], compared as a list: AUC first
        self.best_epoch, self.bad_epochs = 0, 0
        self.best_val, self.best_weights = None, None

    @staticmethod
    def score(val):
        """What ``update`` compares: [val AUC (-inf when there is none), -val loss]."""
        return [val["auc"] if math.isfinite(val["auc"]) else -math.inf, -val["loss"]]

    def update(self, epoch, val, model):
        """After validating ``epoch`` (``val``: its figures, with ``auc`` and ``loss``): True when it is the best so
        far, and then a CPU copy of ``model``'s weights is kept; else one more epoch without improvement."""
        score = self.score(val)
        if score > list(self.best_score):
            self.best_score, self.best_epoch, self.bad_epochs, self.best_val = score, epoch, 0, val
            self.best_weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self):
        """Whether patience has run out (never with patience 0)."""
        return bool(self.patience and self.bad_epochs >= self.patience)

    def state_dict(self):
        """The checkpoint's ``train_state`` entries of this policy (the names checkpoints have always used)."""
        return {"best_score": self.best_score, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs,
                "best_val": self.best_val, "best_model": self.best_weights}

    def load_state_dict(self, state):
        """From a checkpoint's ``train_state`` (other entries ignored); ``patience`` stays the run's own."""
        self.best_score = list(state.get("best_score", [-math.inf, -math.inf]))
        self.best_epoch, self.bad_epochs = state.get("best_epoch", 0), state.get("bad_epochs", 0)
        self.best_val, self.best_weights = state.get("best_val"), state.get("best_model")
