"""Synthetic data sets the tests write: grey images a tiny model learns in a few steps, class-folder channels
(train/val/test, optionally in every PNG mode and JPEG) and multi-label manifest channels with patients."""
import json
import os
import zlib

import numpy as np
from PIL import Image

CLASSES = ["normal", "pneumonia"]


def make_image(label, rng, size=16, mode="L"):
    """A grey image with noise; class 1 ('pneumonia') has a bright square, so a tiny model learns it fast."""
    arr = rng.normal(80, 20, (size, size)).clip(0, 255)
    if label == 1:
        r, c = rng.integers(2, size // 2, 2)
        arr[r:r + size // 3, c:c + size // 3] += 120
    arr = arr.clip(0, 255).astype(np.uint8)
    if mode == "L":
        return Image.fromarray(arr, "L")
    if mode == "I;16":
        return Image.fromarray(arr.astype(np.uint16) * 257)  # 16-bit grayscale PNG
    if mode == "RGB":
        return Image.fromarray(np.stack([arr] * 3, -1), "RGB")
    if mode == "RGBA":
        return Image.fromarray(np.stack([arr] * 3 + [np.full_like(arr, 255)], -1), "RGBA")
    raise ValueError(mode)


def make_dataset(root, counts=None, size=16, seed=0, mixed=False):
    """Write root/<split>/<class>/<i>.png. ``counts``: {split: per-class count}. ``mixed``: vary formats."""
    counts = counts or {"train": 40, "val": 12, "test": 12}
    rng = np.random.default_rng(seed)
    modes = ["L", "I;16", "RGB", "RGBA"] if mixed else ["L"]
    for split, n in counts.items():
        for label, name in enumerate(CLASSES):
            folder = os.path.join(root, split, name)
            os.makedirs(folder, exist_ok=True)
            for i in range(n):
                mode = modes[i % len(modes)]
                ext = ".jpg" if mixed and mode == "RGB" and i % 3 == 0 else ".png"
                make_image(label, rng, size, mode).save(os.path.join(folder, f"{i}{ext}"))
    with open(os.path.join(root, "label_dict.json"), "w") as fh:
        json.dump({"0": "normal", "1": "pneumonia"}, fh)
    return str(root)


FINDINGS = ["Pleural Effusion", "Nodule", "Cardiomegaly"]


def make_finding_image(target, rng, size=24):
    """A grey image holding the findings ``target`` (0/1 per FINDINGS) as shapes a small CNN learns quickly: a
    bright band at the bottom (effusion), a small bright square somewhere in the top half (nodule), a wide
    central blob (cardiomegaly)."""
    arr = rng.normal(70, 15, (size, size))
    if target[0]:
        arr[-size // 5:, :] += 110
    if target[1]:
        r, c = rng.integers(1, size // 2 - 3), rng.integers(1, size - 4)
        arr[r:r + 3, c:c + 3] += 140
    if target[2]:
        arr[size // 3:2 * size // 3, size // 5:4 * size // 5] += 70
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8), "L")


def make_multilabel_dataset(root, counts=None, images_per_patient=3, size=24, seed=0, findings=FINDINGS):
    """Manifest channels root/<split>/images/<i>.png + labels.csv (image, one 0/1 column per finding, patient_id);
    each finding present in about 40% of the images, independently; ``images_per_patient`` images per patient."""
    import layout

    counts = counts or {"train": 60, "val": 20}
    rng = np.random.default_rng(seed)
    for split, n in counts.items():
        folder = os.path.join(root, split)
        os.makedirs(os.path.join(folder, "images"), exist_ok=True)
        targets = [tuple(int(v) for v in rng.random(len(findings)) < 0.4) for _ in range(n)]
        names = [f"images/{i}.png" for i in range(n)]
        for name, target in zip(names, targets):
            make_finding_image(target, rng, size).save(os.path.join(folder, *name.split("/")))
        patients = [f"{split}-p{i // images_per_patient}" for i in range(n)]
        layout.write_manifest(os.path.join(folder, "labels.csv"), names, findings=findings, values=targets,
                              patients=patients)
    return str(root)


def manifest_channel(folder, labels, patients=None, rng=None, prefix="img"):
    """``folder/<prefix>/<i>.png`` and a labels.csv listing them with ``labels`` (class names as written)."""
    import layout

    rng = rng or np.random.default_rng(zlib.crc32(str(folder).encode()))  # each channel its own images
    os.makedirs(os.path.join(folder, prefix), exist_ok=True)
    names = [f"{prefix}/{i}.png" for i in range(len(labels))]
    for name, label in zip(names, labels):
        make_image(int(layout.folder_key(label) != "normal"), rng).save(os.path.join(folder, *name.split("/")))
    layout.write_manifest(os.path.join(folder, "labels.csv"), names, labels=labels, patients=patients)
    return names


BREAST_NAMES = ["malignant", "normal, benign"]  # BreastMNIST's label names


def npz_with_names(folder, names=BREAST_NAMES):
    """A MedMNIST-style ``breast.npz`` (train 24, val 8, test 8 images of 16 px, two classes) and ``names.json``
    naming its classes ``names``, in ``folder``; their paths."""
    import layout

    rng = np.random.default_rng(1)
    arrays = {}
    for split, n in (("train", 24), ("val", 8), ("test", 8)):
        labels = np.arange(n) % 2
        arrays[f"{split}_images"] = np.stack([np.asarray(make_image(int(y), rng, size=16)) for y in labels])
        arrays[f"{split}_labels"] = labels.reshape(-1, 1).astype(np.uint8)
    np.savez(folder / "breast.npz", **arrays)
    (folder / "names.json").write_text(json.dumps(layout.label_dict_json(names)))
    return folder / "breast.npz", folder / "names.json"


def prepare_with_names(folder, names=BREAST_NAMES):
    """npz_with_names, prepared into ``folder/data`` by prepare_data --label-dict; ``(folder, names.json)``."""
    from medimg import prepare_data

    npz, names_json = npz_with_names(folder, names)
    assert prepare_data.main(["--npz", str(npz), "--out", str(folder / "data"), "--label-dict", str(names_json)]) == 0
    return folder, names_json


def single_label_manifest(root, names=("benign", "malignant"), n=8, seed=0):
    """train and val manifest channels of ``n`` images each, anywhere under the channel, two patients' images each,
    labelled ``names`` in turn."""
    import layout

    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        folder = os.path.join(root, split)
        os.makedirs(os.path.join(folder, "scans", "a"), exist_ok=True)
        files, labels = [], []
        for i in range(n):
            rel = f"scans/a/{i}.png" if i % 2 else f"{i}.png"  # images anywhere under the channel
            make_image(i % 2, rng).save(os.path.join(folder, *rel.split("/")))
            files.append(rel)
            labels.append(names[i % 2])
        layout.write_manifest(os.path.join(folder, "labels.csv"), files, labels=labels,
                              patients=[f"p{i // 2}" for i in range(n)])
    return str(root)
