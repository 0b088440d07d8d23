"""Exponential moving average of a model's weights (timm's ModelEmaV2 idea, with a warm-up of the decay)."""
import torch


class ModelEma:
    """EMA of parameters and buffers; decay warms up as min(decay, (1 + t) / (10 + t))."""

    def __init__(self, model, decay):
        self.decay = decay
        self.updates = 0
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model):
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        floats, targets, others = [], [], []
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                floats.append(self.state[k])
                targets.append(v.detach())
            else:
                others.append((k, v))
        torch._foreach_lerp_(floats, targets, 1 - d)
        for k, v in others:
            self.state[k].copy_(v)

    def state_dict(self):
        return {"decay": self.decay, "updates": self.updates, "state": self.state}

    def load_state_dict(self, sd):
        self.decay, self.updates = sd["decay"], sd["updates"]
        for k, v in sd["state"].items():
            self.state[k].copy_(v)
