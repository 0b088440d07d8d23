"""medimg.artifacts.LocalModel through a real model server process: a model directory as train.py writes it is
served with its own code/inference.py in a separate process (nothing imported into the notebook's), batch
predictions equal one-by-one requests, and test_predictions runs it over a local test channel. The rest of
medimg/artifacts.py: tests/unit/client/test_artifacts.py."""
import json
import os
import shutil
import sys

import numpy as np
import pytest
import torch

from medimg import artifacts
import model_def
import train
from conftest import CLASSES, CODE, make_dataset

pytestmark = pytest.mark.slow  # a model server process: not in make test-fast


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A model directory as train.py writes it (untrained weights: the serving path is what is tested)."""
    root = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    net = model_def.create_model("smallcnn", 2, 1)
    torch.save(net.state_dict(), root / "model.pth")
    config = {"architecture": "smallcnn", "num_classes": 2, "in_channels": 1, "image_size": 16, "mean": [0.3],
              "std": [0.2], "classes": CLASSES, "tta": False, "format": "state_dict", "weights": "model.pth"}
    (root / "model_config.json").write_text(json.dumps(config))
    (root / "label_dict.json").write_text(json.dumps({"0": "normal", "1": "pneumonia"}))
    (root / "code").mkdir()
    for name in train.INFERENCE_FILES:
        shutil.copyfile(os.path.join(CODE, name), root / "code" / name)
    return str(root)


def test_local_model_serves_with_its_own_code_and_leaves_imports_alone(model_dir, tmp_path):
    before = dict(sys.modules)
    model = artifacts.LocalModel(model_dir)
    # the model's own code runs in its own process, as in the container: nothing is imported or replaced here
    assert set(sys.modules) == set(before) and all(sys.modules[k] is v for k, v in before.items())
    data = make_dataset(tmp_path / "data", counts={"test": 3})
    paths = sorted(str(p) for p in (tmp_path / "data" / "test").glob("*/*.png"))
    batch = model.predict_files(paths, batch_size=4)
    one_by_one = [[model.invoke(open(p, "rb").read(), "image/png")["predictions"][0]["probabilities"][c]
                   for c in CLASSES] for p in paths]
    assert batch.shape == (6, 2) and np.allclose(batch, one_by_one, atol=1e-6)
    assert np.allclose(batch.sum(axis=1), 1, atol=1e-5)
    labels, probs, classes = artifacts.test_predictions({"classes": CLASSES}, model_dir, os.path.join(data, "test"))
    assert labels.tolist() == [0, 0, 0, 1, 1, 1] and classes == CLASSES and np.allclose(probs, batch)
    model.close()
