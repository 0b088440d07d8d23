"""A tiny engine.Trainer in the test process: code/'s training machinery on the CPU in milliseconds."""
from data_factories import CLASSES


class RecordingWriter:
    """What engine.Trainer needs of train.ModelWriter (``save``, ``exists``), keeping copies of what it saved."""

    def __init__(self):
        self.saved = []

    def exists(self):
        return bool(self.saved)

    def save(self, weights):
        self.saved.append({k: v.clone() for k, v in weights.items()})


def tiny_trainer(tmp_path, *flags, n=16, size=8, width=4, seed=0, writer=None, predict=None, callbacks=()):
    """An engine.Trainer in this process, on the CPU, of a tiny CNN (``width`` channels, with BatchNorm, so buffers
    too) on ``n`` random ``size``-pixel grey images of two classes (the same images serve as val): code/'s training
    machinery in milliseconds. ``flags``: train.py's (``--ema``, ``--patience`` ...); checkpoints go to tmp_path/ck.
    ``predict``: in place of the evaluation.SplitPredictor (scripted validation figures)."""
    import torch

    import distributed
    import engine
    import evaluation
    import hyperparameters
    import loaders
    import safeguards
    import schedule
    from channels import ClassNames
    from data import Data

    args = hyperparameters.parse_args(["--model-dir", str(tmp_path / "model"), "--checkpoint-dir", str(tmp_path / "ck"),
                                       "--output-data-dir", str(tmp_path / "out"), "--seed", str(seed), *flags],
                                      environ={})
    images = torch.randint(0, 256, (n, 1, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    split = loaders.CachedSplit(images, torch.arange(n) % 2)
    data = Data(split, split, None, channels=1, size=size, mean=[0.5], std=[0.25], streamed=False,
                classes=ClassNames(CLASSES, "a test"))
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, width, 3, padding=1), torch.nn.BatchNorm2d(width), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(width, 2))
    dist, device = distributed.DistInfo(), torch.device("cpu")
    plan = schedule.make_plan(args, n)
    return engine.Trainer(args, data, model, model, plan=plan,
                          predict=predict or evaluation.SplitPredictor(args, data, plan, device, dist), device=device,
                          amp_dtype=None, dist_info=dist, writer=writer or RecordingWriter(),
                          stop=safeguards.StopRequest(install_handler=False), callbacks=callbacks)
