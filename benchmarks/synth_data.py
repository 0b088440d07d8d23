#!/usr/bin/env python
"""Write a synthetic two-class data set as PNG class folders (for benchmarks/gpu_check.sh).

    python benchmarks/synth_data.py --out build/gpu-check/data224 --size 224 --channels 3 --train 3840 --val 256

``OUT/{train,val}/<class>/<i>.png`` with the class names of code/label_dict.json. Images are smooth random
fields (cheap to encode and decode, like real scans rather than noise); the second class has a bright
square, so a model can learn the task. Written by a thread pool; rerunning with the same settings is a no-op.
"""
import argparse
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
LABEL_DICT = os.path.join(os.path.dirname(HERE), "code", "label_dict.json")


def make_image(rng, label, size, channels):
    coarse = rng.integers(40, 200, (8, 8, channels), dtype=np.uint8)
    im = Image.fromarray(coarse[:, :, 0] if channels == 1 else coarse).resize((size, size), Image.BILINEAR)
    arr = np.asarray(im).astype(np.int16)
    if label == 1:
        k = max(2, size // 4)
        r, c = rng.integers(0, size - k, 2)
        arr[r:r + k, c:c + k] += 50
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def write(out, size, channels, counts, seed=0, workers=None):
    with open(LABEL_DICT) as fh:
        classes = [name for _, name in sorted(json.load(fh).items(), key=lambda kv: int(kv[0]))][:2]
    stamp = os.path.join(out, ".complete")
    settings = json.dumps({"size": size, "channels": channels, "counts": counts, "seed": seed, "classes": classes})
    if os.path.isfile(stamp) and open(stamp).read() == settings:
        return out
    jobs = []
    for split, n in counts.items():
        for label, name in enumerate(classes):
            os.makedirs(os.path.join(out, split, name), exist_ok=True)
        jobs += [(split, i, i % 2) for i in range(n)]

    def work(job):
        split, i, label = job
        rng = np.random.default_rng([seed, sorted(counts).index(split), i])
        make_image(rng, label, size, channels).save(os.path.join(out, split, classes[label], f"{i}.png"))

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        list(pool.map(work, jobs, chunksize=64))
    with open(stamp, "w") as fh:
        fh.write(settings)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--channels", type=int, choices=(1, 3), default=1)
    p.add_argument("--train", type=int, default=1024)
    p.add_argument("--val", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    write(args.out, args.size, args.channels, {"train": args.train, "val": args.val}, args.seed)
    print(f"synthetic data: {args.out} ({args.train} train + {args.val} val, {args.size} px, {args.channels} ch)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
