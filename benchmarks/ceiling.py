#!/usr/bin/env python
"""Hardware ceiling and model cost: matmul FLOP/s per dtype, and training FLOPs per image per model.

    python benchmarks/ceiling.py --cases smallcnn@28:1,resnet18@64:1 [--sizes 2048,4096] [--repeats 5]

* Ceiling: the best of ``--repeats`` large square ``torch.mm`` per size and dtype (fp32; bf16 where the
  hardware supports it: oneDNN's bf16 check on a CPU, native bf16 on a GPU), as FLOP/s = 2 n^3 / s, on the
  default thread count, and on a CPU also on one thread (the per-core ceiling, to compare with throughput per
  CPU-second). The best over sizes is the ceiling.
* Cost: ``torch.utils.flop_counter.FlopCounterMode`` over forward + backward of the model in train mode
  (convolutions and matmuls; norms and activations are not counted, as usual), per image.
* With ``--conv-batch B``: each case's own convolutions timed forward + backward at batch B in fp32 NCHW (the
  plain loop's step) and in train.py's dtype with channels_last: the speed-up precision and layout alone give.

Prints one line ``CEILING_RESULT {json}``.
"""
import argparse
import copy
import json
import os
import sys
import time


PREFIX = "CEILING_RESULT "


def parse_case(text):
    """'resnet18@64:1' -> ('resnet18', 64, 1); channels default 1. 'smallcnn/s1@128' forces smallcnn's stem stride
    (else the one train.py picks for the size)."""
    name, _, rest = text.partition("@")
    size, _, channels = rest.partition(":")
    return name, int(size), int(channels or 1)


def build(case_name, size, channels):
    """The model of a case, with the architecture options train.py gives it at ``size`` px."""
    import model_def

    name, _, stride = case_name.partition("/s")
    # an older checkout (--code) has no architecture_options: its models take none
    options = getattr(model_def, "architecture_options", lambda *_: {})(name, size)
    if stride:
        options["stem_stride"] = int(stride)
    return model_def.create_model(name, 2, channels, **options)


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

    model = build(model_name, size, channels).train()
    x = torch.randn(batch, channels, size, size)
    with FlopCounterMode(display=False) as counter:
        model(x).float().sum().backward()
    return counter.get_total_flops() / batch


def conv_speedup(model_name, size, channels, batch, device, repeats=3):
    """How much precision and memory layout alone can speed up this model's convolutions.

    Each convolution of the model, at its own input shape (batch ``batch``), timed forward + backward (best of
    ``repeats``) as the plain loop runs it (fp32, NCHW) and as train.py does (channels_last, in bf16 where
    supported); convolutions are most of either step, so their speed-up bounds train.py's over the plain loop
    apart from what decoding once saves. Returns seconds per batch and FLOP/s of each, and the speed-up."""
    import torch

    model = build(model_name, size, channels).train()
    shapes = []
    hooks = [m.register_forward_hook(lambda m, i, o: shapes.append((m, tuple(i[0].shape), o.numel())))
             for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model(torch.zeros(1, channels, size, size))
    for h in hooks:
        h.remove()
    fast = torch.bfloat16 if bf16_supported(device) else torch.float32
    out = {}
    for name, dtype, layout in (("plain", torch.float32, torch.contiguous_format),
                                ("train_py", fast, torch.channels_last)):
        seconds = flops = 0.0
        for first, (conv, shape, out_numel) in enumerate(shapes):
            conv_c = copy.deepcopy(conv).to(device, dtype=dtype, memory_format=layout)
            x = torch.randn(batch, *shape[1:], device=device, dtype=dtype).contiguous(memory_format=layout)
            x.requires_grad_(first > 0)  # the image needs no gradient
            y = conv_c(x)
            grad = torch.randn_like(y)

            def step():
                conv_c(x).backward(grad)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)

            step()
            best = min(_timed(step) for _ in range(repeats))
            seconds += best
            flops += 2 * batch * out_numel * conv.in_channels // conv.groups * conv.kernel_size[0] \
                * conv.kernel_size[1] * (3 if first > 0 else 2)
        out[name] = {"dtype": str(dtype).replace("torch.", ""), "seconds_per_batch": seconds,
                     "flops": flops / seconds}
    out["speedup"] = out["plain"]["seconds_per_batch"] / out["train_py"]["seconds_per_batch"]
    out["batch"] = batch
    return out


def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", default="smallcnn@28:1", help="model@size[:channels], comma separated")
    p.add_argument("--sizes", default="2048,4096", help="matmul sizes")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--conv-batch", type=int, default=0,
                   help="also time each case's convolutions at this batch size, fp32 NCHW vs train.py's dtype "
                        "and channels_last (0: no)")
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
        if args.conv_batch:
            result.setdefault("conv_speedup", {})[case] = conv_speedup(name, size, channels, args.conv_batch,
                                                                      device)
    print(PREFIX + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
