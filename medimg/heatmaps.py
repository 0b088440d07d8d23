"""Class-activation heat maps of a trained model: Grad-CAM (Selvaraju et al., "Grad-CAM: Visual Explanations from
Deep Networks via Gradient-based Localization", ICCV 2017) through captum's ``LayerGradCam``, on the model's last
convolutional stage, upsampled to the image.

The model's own ``code/`` (from model.tar.gz) builds and preprocesses it, in a separate process with that folder on
its PYTHONPATH, as the endpoint runs it (medimg.serving): nothing of the model's flat modules enters this process.

    maps = heatmaps(model_dir, ["a.png", "b.png"])            # one dict per image
    python -m medimg.heatmaps MODEL_DIR OUT.npz IMAGE...      # the child process itself

captum is a client-side dependency (requirements.txt); code/ never needs it.
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

def heatmaps(model_dir, paths, targets=None, python=sys.executable, timeout=600):
    """Grad-CAM maps of ``paths`` for ``targets`` (class or finding indices, one per image; default: the model's
    predicted class, or its most probable finding). Returns one dict per image: ``image`` (uint8 (H, W) or
    (H, W, 3), as the model sees it), ``map`` (float32 (H, W) in [0, 1]), ``target`` (index), ``probabilities``
    ((K,) float32). Raises RuntimeError with the child's message when it fails."""
    model_dir = os.path.abspath(model_dir)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "maps.npz")
        cmd = [python, "-m", "medimg.heatmaps", model_dir, out, *[os.path.abspath(p) for p in paths]]
        if targets is not None:
            cmd += ["--targets", json.dumps([int(t) for t in targets])]
        path = [os.path.join(model_dir, "code"), os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(path + [p for p in [os.environ.get("PYTHONPATH")] if p]))
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
        if done.returncode:
            raise RuntimeError(f"heat maps failed: {done.stderr.strip().splitlines()[-1] if done.stderr else ''}")
        with np.load(out, allow_pickle=False) as saved:
            return [{"image": saved[f"image{i}"], "map": saved["maps"][i], "target": int(saved["targets"][i]),
                     "probabilities": saved["probabilities"][i]} for i in range(len(paths))]


def _compute(model_dir, paths, targets):
    """In the child: the model's own code builds, decodes and normalises, as inference.py does."""
    import torch
    from captum.attr import LayerAttribution, LayerGradCam

    import images
    import inference
    import prediction

    loaded = inference.model_fn(model_dir)
    model, config = loaded.model.float().eval(), loaded.config
    layer = _layer(model, config["architecture"])
    page = {"page": loaded.config["page"]} if loaded.config.get("page") else {}  # older code/ has no page
    pixels = [images.load(p, loaded.channels, loaded.size, 64_000_000, **page) for p in paths]
    batch = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        probs = prediction.probabilities(model, batch, mean=loaded.mean, std=loaded.std, tta=False,
                                         multilabel=loaded.multilabel, temperature=loaded.temperature).numpy()
    if targets is None:  # the model's own decision: its operating threshold when it has one, else the argmax
        threshold, positive = config.get("threshold"), config.get("positive_index", 1)
        targets = (np.where(probs[:, positive] >= threshold, positive, 1 - positive) if threshold is not None
                   else probs.argmax(axis=1)).tolist()
    x = prediction.normalize(batch.float().div(255), loaded.mean, loaded.std).requires_grad_(True)
    cam = LayerGradCam(model, layer).attribute(x, target=[int(t) for t in targets], relu_attributions=True)
    maps = LayerAttribution.interpolate(cam, (loaded.size, loaded.size), interpolate_mode="bilinear")
    maps = maps.detach()[:, 0].numpy()
    peak = maps.reshape(len(maps), -1).max(axis=1).reshape(-1, 1, 1)
    maps = np.where(peak > 0, maps / np.maximum(peak, 1e-12), 0).astype(np.float32)
    return pixels, maps, np.asarray(targets), probs.astype(np.float32)


def _layer(model, architecture):
    """The module Grad-CAM explains: the stage the model's own model_def.CAM_LAYERS names, else the last
    convolution."""
    import torch

    import model_def

    name = getattr(model_def, "CAM_LAYERS", {}).get(architecture)
    if name is not None:
        return getattr(model, name)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    if not convs:
        raise RuntimeError(f"{architecture} has no convolution for Grad-CAM")
    return convs[-1]


def main(argv=None):
    import argparse

    p = argparse.ArgumentParser(description="Grad-CAM heat maps of a model.tar.gz's model (see medimg.heatmaps)")
    p.add_argument("model_dir")
    p.add_argument("out")
    p.add_argument("paths", nargs="+")
    p.add_argument("--targets", help="JSON list of class indices, one per image")
    args = p.parse_args(argv)
    targets = json.loads(args.targets) if args.targets else None
    pixels, maps, targets, probs = _compute(args.model_dir, args.paths, targets)
    arrays = {f"image{i}": (px[:, :, 0] if px.shape[-1] == 1 else px) for i, px in enumerate(pixels)}
    np.savez(args.out, maps=maps, targets=targets, probabilities=probs, **arrays)
    return 0


if __name__ == "__main__":
    sys.exit(main())
