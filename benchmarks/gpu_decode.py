#!/usr/bin/env python
"""JPEG decoding on the GPU (``torchvision.io.decode_jpeg(device="cuda")``, nvJPEG) against the CPU (PIL, as
train.py's decoder), for benchmarks/gpu_check.sh: images/s of each, one JSON line.

    python benchmarks/gpu_decode.py --folder build/gpu-check/data224/train --n 512 [--device cpu]

The PNGs of ``--folder`` are written once as JPEGs (quality 90) beside it; then batches of 64 files are read as
bytes and decoded, on ``--device`` (cuda: one call per batch) and with PIL on the CPU, resized to 224 px. This is
an existing library's answer to a CPU-bound decode, measured, not wired into train.py (shards already decode once).
"""
import argparse
import glob
import json
import os
import sys
import time

import torch
import torchvision
from PIL import Image
from torchvision.transforms.functional import resize


def jpeg_files(folder, n):
    out = folder.rstrip("/") + "-jpeg"
    os.makedirs(out, exist_ok=True)
    files = []
    for path in sorted(glob.glob(os.path.join(folder, "*", "*.png")))[:n]:
        target = os.path.join(out, os.path.basename(os.path.dirname(path)) + "-" + os.path.basename(path)[:-4] + ".jpg")
        if not os.path.isfile(target):
            with Image.open(path) as im:
                im.convert("RGB").save(target, quality=90)
        files.append(target)
    return files


def gpu_rate(files, device, size=224):
    datas = [torchvision.io.read_file(f) for f in files]
    for _ in range(2):  # warm-up: nvJPEG handles, kernels
        torchvision.io.decode_jpeg(datas[:8], device=device)
    if device != "cpu":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for start in range(0, len(datas), 64):
        images = torchvision.io.decode_jpeg(datas[start:start + 64], device=device)
        [resize(im, [size, size], antialias=True) for im in images]
    if device != "cpu":
        torch.cuda.synchronize()
    return len(datas) / (time.perf_counter() - t0)


def pil_rate(files, size=224):
    t0 = time.perf_counter()
    for f in files:
        with Image.open(f) as im:
            im.convert("RGB").resize((size, size), Image.BILINEAR)
    return len(files) / (time.perf_counter() - t0)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--folder", required=True)
    p.add_argument("--n", type=int, default=512)
    p.add_argument("--device", default="cuda")
    args = p.parse_args(argv)
    files = jpeg_files(args.folder, args.n)
    result = {"images": len(files), "device": args.device, "decode_jpeg_per_s": gpu_rate(files, args.device),
              "pil_cpu_per_s": pil_rate(files), "cpu_threads": torch.get_num_threads()}
    print("GPU_DECODE " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
