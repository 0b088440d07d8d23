"""The data every section trains on, as PNG class folders written once with medimg.prepare_data and reused (a
``.complete`` marker says a folder is whole): PneumoniaMNIST at 28 px or upsampled (``pneumonia``), synthetic sets
of any size made from it (``synthetic``), and the dev settings (``DEV_SETTINGS``, ``dev_data``: a train split cut
by a stratified, seeded subsample, the npz's val split as the val channel).
"""
import datetime
import json
import os
import shutil

from benchmarks.harness import ROOT

# The dev settings (section ``dev``): npz in --dev-data, train split cut to ``n_train`` (None: all), class names,
# and ``size``: both splits upsampled (bilinear) to this side, for a setting of that size's cost (not its detail).
DEV_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")  # the README's ../shared/data/
DEV_SETTINGS = {
    "pneumonia-300": dict(npz="pneumoniamnist_trainval.npz", n_train=300, classes=("normal", "pneumonia")),
    "pneumonia-1000": dict(npz="pneumoniamnist_trainval.npz", n_train=1000, classes=("normal", "pneumonia")),
    "pneumonia-all": dict(npz="pneumoniamnist_trainval.npz", n_train=None, classes=("normal", "pneumonia")),
    "retina": dict(npz="retinamnist_trainval.npz", n_train=None, classes=("0", "1", "2", "3", "4")),
    # a breast-ultrasound-sized set at 64 px (546 train images): what the ensemble's time rule does at that size
    "pneumonia-546-64px": dict(npz="pneumoniamnist_trainval.npz", n_train=546, classes=("normal", "pneumonia"),
                               size=64),
}
DEV_SUBSAMPLE_SEED = 1234  # fixed: every run seed and every checkout trains on the same subsample


def _done(folder):
    return os.path.isfile(os.path.join(folder, ".complete"))


def _mark(folder):
    with open(os.path.join(folder, ".complete"), "w") as fh:
        fh.write(datetime.datetime.now().isoformat() + "\n")


def _write(folder, splits):
    """splits: {name: (uint8 images N,H,W, labels N)} -> folder/<split>/<class>/<i>.png via prepare_data."""
    from medimg import prepare_data

    if os.path.isdir(folder):
        shutil.rmtree(folder)
    label_dict = prepare_data.read_label_dict(prepare_data.DEFAULT_LABEL_DICT)
    prepare_data.write_splits(splits, label_dict, folder)
    _mark(folder)
    return folder


def _npz_splits(npz, subsample):
    import numpy as np

    data = np.load(npz)
    splits = {s: (data[f"{s}_images"], data[f"{s}_labels"].reshape(-1)) for s in ("train", "val")}
    if subsample:
        rng = np.random.default_rng(0)
        for s, n in zip(("train", "val"), subsample):
            idx = np.sort(rng.choice(len(splits[s][1]), size=min(n, len(splits[s][1])), replace=False))
            splits[s] = (splits[s][0][idx], splits[s][1][idx])
    return splits


def _resize(images, size):
    import numpy as np
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR)) for im in images])


def pneumonia(build, npz, size, subsample):
    """PneumoniaMNIST train/val as class folders, at 28 px or upsampled (bilinear) to ``size``."""
    folder = os.path.join(build, f"pneumonia{size if size != 28 else ''}")
    if not _done(folder):
        splits = _npz_splits(npz, subsample)
        if size != 28:
            splits = {s: (_resize(im, size), lab) for s, (im, lab) in splits.items()}
        _write(folder, splits)
    return folder


def synthetic(build, npz, n, subsample):
    """``n`` training images made from PneumoniaMNIST's (random flips, shifts and noise), 28 px, plus its val."""
    import numpy as np

    folder = os.path.join(build, f"synthetic-{n}")
    if not _done(folder):
        splits = _npz_splits(npz, subsample)
        images, labels = splits["train"]
        rng = np.random.default_rng(n)
        pick = rng.integers(0, len(labels), n)
        out = images[pick].astype(np.int16)
        flip = rng.random(n) < 0.5
        out[flip] = out[flip, :, ::-1]
        shifts = rng.integers(-2, 3, (n, 2))
        for i in range(n):  # small shifts: every image is a different file, as a real set
            out[i] = np.roll(out[i], tuple(shifts[i]), axis=(0, 1))
        out = np.clip(out + rng.normal(0, 3, out.shape), 0, 255).astype(np.uint8)
        _write(folder, {"train": (out, labels[pick]), "val": splits["val"]})
    return folder


# ==================================================================================================
# The dev settings
# ==================================================================================================
def dev_npz(name, folder):
    """The npz ``name`` in ``folder`` (--dev-data), else in the repository's data/; None if neither has it."""
    for candidate in (os.path.join(folder, name), os.path.join(ROOT, "data", name)):
        if os.path.isfile(candidate):
            return candidate
    return None


def stratified_subsample(labels, n, seed):
    """Sorted indices of ``n`` of ``labels`` drawn per class in proportion to the class counts (largest
    remainders; at least one of every class), with their own ``seed``. All indices when ``n`` is None or covers
    everything."""
    import numpy as np

    labels = np.asarray(labels).reshape(-1)
    if n is None or n >= len(labels):
        return np.arange(len(labels))
    classes, counts = np.unique(labels, return_counts=True)
    if n < len(classes):
        raise ValueError(f"cannot keep every one of {len(classes)} classes in {n} images")
    exact = n * counts / counts.sum()
    take = np.maximum(1, np.floor(exact).astype(int))
    for i in np.argsort(-(exact - np.floor(exact)), kind="stable"):  # largest remainders first
        if take.sum() >= n:
            break
        if take[i] < counts[i]:
            take[i] += 1
    while take.sum() > n:  # only when the at-least-one rule overshot: trim the largest class
        take[np.argmax(take)] -= 1
    rng = np.random.default_rng(seed)
    picked = [rng.choice(np.flatnonzero(labels == c), size=k, replace=False) for c, k in zip(classes, take)]
    return np.sort(np.concatenate(picked))


def dev_data(build, npz_folder, name, cap=None, settings=None):
    """The class folders of dev setting ``name`` below ``build`` (train cut as the setting says, the npz's val as the
    val channel, no test channel), from the npz in ``npz_folder`` (--dev-data), written once with
    medimg.prepare_data.write_splits; ``cap``: (train, val) at most these many images each (the smoke mode);
    ``settings``: where ``name`` is defined (default DEV_SETTINGS). Returns (folder, info)."""
    import numpy as np

    from medimg import prepare_data

    setting = (settings or DEV_SETTINGS)[name]
    npz = dev_npz(setting["npz"], npz_folder)
    if npz is None:
        raise RuntimeError(f"dev setting {name}: {setting['npz']} is in neither {npz_folder} nor "
                           f"{os.path.join(ROOT, 'data')}; give --dev-data or leave the setting out (--settings)")
    cap_train, cap_val = cap or (None, None)
    caps = [v for v in (setting["n_train"], cap_train) if v]
    n_train = min(caps) if caps else None
    spec = {"npz": os.path.abspath(npz), "n_train": n_train, "n_val": cap_val, "subsample_seed": DEV_SUBSAMPLE_SEED,
            "classes": list(setting["classes"]), "size": setting.get("size")}
    folder = os.path.join(build, "dev-data", name + (f"-smoke{cap_train}x{cap_val}" if cap else ""))
    spec_path = os.path.join(folder, "dev-spec.json")
    if _done(folder) and os.path.isfile(spec_path):
        with open(spec_path) as fh:
            written = json.load(fh)
        if written["spec"] == spec:
            return folder, written["info"]
    data = np.load(npz)
    splits, info = {}, {"npz": os.path.basename(npz), "subsample_seed": DEV_SUBSAMPLE_SEED}
    for split, n in (("train", n_train), ("val", cap_val)):
        images, labels = data[f"{split}_images"], data[f"{split}_labels"].reshape(-1)
        idx = stratified_subsample(labels, n, DEV_SUBSAMPLE_SEED)
        splits[split] = (_resize(images[idx], setting["size"]) if setting.get("size") else images[idx], labels[idx])
        info[f"n_{split}"] = int(len(idx))
        info[f"{split}_of"] = int(len(labels))
        info[f"{split}_per_class"] = np.bincount(labels[idx], minlength=len(setting["classes"])).tolist()
    info["image_shape"] = list(splits["train"][0].shape[1:])
    info["classes"] = list(setting["classes"])
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    prepare_data.write_splits(splits, list(setting["classes"]), folder)
    with open(spec_path, "w") as fh:
        json.dump({"spec": spec, "info": info}, fh, indent=2)
    _mark(folder)
    return folder, info
