#!/usr/bin/env python
"""The baseline: the plain training loop of typical script-mode examples, on the same model and data.

    python benchmarks/plain_loop.py --data DIR --model smallcnn --batch-size 128 --workers 0 --steps 30

What "typical" means here (pytorch/examples ``mnist`` and ``imagenet``, the SageMaker PyTorch MNIST example):
``torchvision.datasets.ImageFolder`` over the class folders, PIL decode plus ``RandomHorizontalFlip``,
``ToTensor`` and ``Normalize`` per sample, every epoch; ``DataLoader(shuffle=True)`` with ``--workers``
processes (those examples pass ``num_workers=1, pin_memory=True`` only when CUDA is used, so none on a CPU);
fp32, NCHW, AdamW, ``loss.item()`` every 10 steps for the log. Gray images are read with
``Grayscale(1)`` so the model is exactly train.py's (same ``model_def.create_model`` and channel count).

After ``--warmup-steps`` steps (not timed), ``--steps`` steps are timed; epochs restart as in a real loop.
Prints one line ``PLAIN_RESULT {json}``.
"""
import argparse
import json
import os
import sys
import time


PREFIX = "PLAIN_RESULT "


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="a folder of class folders")
    p.add_argument("--model", default="smallcnn")
    p.add_argument("--in-channels", type=int, choices=(1, 3), default=1)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup-steps", type=int, default=5)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def batches(loader):
    """Batches forever, epoch after epoch, as ``for epoch ...: for x, y in loader`` does."""
    while True:
        yield from loader


def main(argv=None):
    args = parse_args(argv)
    import torch
    import torchvision
    from torchvision import transforms

    import model_def

    torch.manual_seed(args.seed)
    gray = [transforms.Grayscale(1)] if args.in_channels == 1 else []
    tf = transforms.Compose(gray + [transforms.RandomHorizontalFlip(), transforms.ToTensor(),
                                    transforms.Normalize([0.5] * args.in_channels, [0.25] * args.in_channels)])
    dataset = torchvision.datasets.ImageFolder(args.data, transform=tf)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True,
                                         num_workers=args.workers, drop_last=True)
    model = model_def.create_model(args.model, len(dataset.classes), args.in_channels)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    criterion = torch.nn.CrossEntropyLoss()
    model.train()
    t_warm = time.perf_counter()
    w0 = c0 = None
    images = 0
    for step, (x, y) in enumerate(batches(loader)):
        if step == args.warmup_steps:
            w0, c0 = time.perf_counter(), time.process_time()
        if step == args.warmup_steps + args.steps:
            break
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        if step % 10 == 0:
            loss.item()  # the examples' log line
        if w0 is not None:
            images += len(y)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    result = {"images": images, "steps": args.steps, "wall_s": wall, "cpu_s": cpu,
              "images_per_sec": images / wall, "warmup_s": w0 - t_warm, "workers": args.workers,
              "threads": torch.get_num_threads(), "model": args.model, "batch_size": args.batch_size,
              "n_images": len(dataset)}
    print(PREFIX + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
