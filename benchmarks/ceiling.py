#!/usr/bin/env python
"""Hardware ceiling and model cost: matmul FLOP/s per dtype, and training FLOPs per image per model.

    python benchmarks/ceiling.py --cases smallcnn@28:1,resnet18@64:1 [--sizes 2048,4096] [--repeats 5]

* Ceiling: the best of ``--repeats`` large square ``torch.mm`` per size and dtype (fp32; bf16 where the
  hardware supports it: oneDNN's bf16 check on a CPU, native bf16 on a GPU), as FLOP/s = 2 n^3 / s, on the
  default thread count, and on a CPU also on one thread (the per-core ceiling, to compare with throughput per
  CPU-second). The best over sizes is the ceiling.
* Cost: ``torch.utils.flop_counter.FlopCounterMode`` over forward + backward of the model in train mode
  (convolutions and matmuls; norms and activations are not counted, as usual), per image.

Prints one line ``CEILING_RESULT {json}``.
"""
import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "code"))

PREFIX = "CEILING_RESULT "


def parse_case(text):
    """'resnet18@64:1' -> ('resnet18', 64, 1); channels default 1."""
    name, _, rest = text.partition("@")
    size, _, channels = rest.partition(":")
    return name, int(size), int(channels or 1)


def bf16_supported(device):
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).major >= 8
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def matmul_flops(n, dtype, device, repeats):
    """Best FLOP/s of ``repeats`` n x n matmuls (after one untimed warm-up)."""
    import torch

    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    torch.mm(a, b)
    best = 0.0
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = max(best, 2.0 * n ** 3 / (time.perf_counter() - t0))
    return best


def ceiling(sizes, repeats, device):
    import torch

    dtypes = [torch.float32] + ([torch.bfloat16] if bf16_supported(device) else [])
    out = {}
    for dtype in dtypes:
        per_size = {str(n): matmul_flops(n, dtype, device, repeats) for n in sizes}
        name = str(dtype).replace("torch.", "")
        out[name] = {"flops": max(per_size.values()), "per_size": per_size}
    return out


def train_flops_per_image(model_name, size, channels, batch=2):
    """FLOPs of one training step's forward + backward, per image (counted on a batch of ``batch``)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import model_def

    model = model_def.create_model(model_name, 2, channels).train()
    x = torch.randn(batch, channels, size, size)
    with FlopCounterMode(display=False) as counter:
        model(x).float().sum().backward()
    return counter.get_total_flops() / batch


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", default="smallcnn@28:1", help="model@size[:channels], comma separated")
    p.add_argument("--sizes", default="2048,4096", help="matmul sizes")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    import torch

    device = torch.device(args.device)
    t0 = time.perf_counter()
    sizes = [int(s) for s in args.sizes.split(",")]
    result = {"device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "matmul": ceiling(sizes, args.repeats, device), "flops_per_image": {}}
    if device.type == "cpu" and torch.get_num_threads() > 1:  # per core: compares with CPU-time throughput
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        result["matmul_1thread"] = ceiling(sizes, args.repeats, device)
        torch.set_num_threads(threads)
    else:
        result["matmul_1thread"] = result["matmul"] if device.type == "cpu" else None
    result["matmul_s"] = time.perf_counter() - t0
    for case in filter(None, args.cases.split(",")):
        name, size, channels = parse_case(case)
        result["flops_per_image"][case] = train_flops_per_image(name, size, channels)
    print(PREFIX + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
