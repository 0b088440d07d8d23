"""code/inference.py on a model train.py really trained: round trips against train.py's own evaluation,
the packaged code in a fresh process, and every refused request with its HTTP status."""
import base64
import filecmp
import glob
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import types
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

import inference
import loaders
import model_def
import prediction
import train
from conftest import CLASSES, CODE, make_dataset

pytestmark = pytest.mark.slow  # real processes or trained models: not in make test-fast

TOL = 1e-5  # float32 noise between batch compositions and memory formats
INFERENCE_FILES = sorted(train.INFERENCE_FILES)


# ---------------------------------------------------------------- a model trained once, deployed as SageMaker does
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("inference")
    data = make_dataset(root / "data", counts={"train": 24, "val": 8, "test": 8})
    model_dir = root / "model"
    cmd = [sys.executable, os.path.join(CODE, "train.py"), "--epochs", "2", "--batch-size", "16", "--ema", "0",
           "--patience", "0", "--tta", "true", "--train", os.path.join(data, "train"),
           "--val", os.path.join(data, "val"), "--test", os.path.join(data, "test"), "--model-dir", str(model_dir),
           "--output-data-dir", str(root / "output" / "data"), "--output-dir", str(root / "output"),
           "--checkpoint-dir", "", "--label-dict", os.path.join(data, "label_dict.json")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=root,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    deployed = root / "opt_ml_model"  # what the endpoint extracts model.tar.gz into
    shutil.copytree(model_dir, deployed)
    tests = sorted(glob.glob(os.path.join(data, "test", "*", "*.png")))
    return types.SimpleNamespace(root=root, data=data, model_dir=deployed, test_paths=tests)


@pytest.fixture(scope="module")
def model(trained):
    return inference.model_fn(str(trained.model_dir))


@pytest.fixture(scope="module")
def reference(trained):
    """train.py's evaluation of the test images: (uint8 NCHW pixels, probabilities)."""
    return training_eval(trained.model_dir, trained.test_paths)


def training_eval(model_dir, paths, tta=True):
    """Decode ``paths`` and predict exactly as train.py's evaluate does (fp32)."""
    with open(os.path.join(model_dir, "model_config.json")) as fh:
        config = json.load(fh)
    channels, size = config["in_channels"], config["image_size"]
    ds = loaders.ImageFileDataset(paths, [0] * len(paths), channels, size, 64_000_000)
    pixels, _, bad = loaders.decode_all(ds, workers=1)
    assert not bad
    net = model_def.create_model(config["architecture"], config["num_classes"], channels,
                                 **config["architecture_options"])
    net.load_state_dict(torch.load(os.path.join(model_dir, "model.pth"), weights_only=True))
    net = net.to(memory_format=torch.channels_last).eval()  # train.py evaluates in channels_last, 16 at a time
    prob = torch.cat([prediction.probabilities(net, pixels[i:i + 16], mean=config["mean"], std=config["std"],
                                               tta=tta, temperature=config["temperature"],
                                               memory_format=torch.channels_last)
                      for i in range(0, len(pixels), 16)]).numpy()
    return pixels, prob


def ask(model, body, content_type, accept="application/json"):
    text, media = inference.output_fn(inference.predict_fn(inference.input_fn(body, content_type), model), accept)
    assert media == "application/json"
    return json.loads(text)["predictions"]


def probs_of(predictions):
    return np.array([[p["probabilities"][c] for c in CLASSES] for p in predictions])


def read(path):
    with open(path, "rb") as fh:
        return fh.read()


def npy(array):
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def png(array):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


# ---------------------------------------------------------------- packaging and the container's view
def test_model_dir_ships_the_inference_code(trained):
    code = trained.model_dir / "code"
    assert sorted(os.listdir(code)) == INFERENCE_FILES
    for name in INFERENCE_FILES:
        assert filecmp.cmp(code / name, os.path.join(CODE, name), shallow=False), name
    config = json.loads((trained.model_dir / "model_config.json").read_text())
    assert config["tta"] is True and config["classes"] == CLASSES and config["format"] == "state_dict"


def test_handlers_take_exactly_the_toolkits_arguments():
    """sagemaker_inference passes a context as an extra argument to a handler with one more parameter: model_fn
    takes it (the worker's GPU), with a default for callers that pass model_dir alone; the others take none."""
    import inspect

    arity = {name: len(inspect.signature(getattr(inference, name)).parameters)
             for name in ("model_fn", "input_fn", "predict_fn", "output_fn")}
    assert arity == {"model_fn": 2, "input_fn": 2, "predict_fn": 2, "output_fn": 2}
    assert inspect.signature(inference.model_fn).parameters["context"].default is None
    assert not hasattr(inference, "transform_fn")  # the toolkit refuses transform_fn beside the others


def test_packaged_code_serves_in_a_fresh_process(trained, reference, tmp_path):
    """As in the container: only model_dir/code on the path, sagemaker_inference's error base present,
    TorchServe's bytearray body; and no scikit-learn import."""
    stub = tmp_path / "stub" / "sagemaker_inference"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("")
    (stub / "errors.py").write_text(
        "class BaseInferenceToolkitError(Exception):\n"
        "    def __init__(self, status_code, message, phrase):\n"
        "        self.status_code, self.message, self.phrase = status_code, message, phrase\n"
        "        super().__init__(status_code, message, phrase)\n")
    script = (
        "import json, sys\n"
        "import inference, utils, model_def, images, prediction\n"
        "from sagemaker_inference.errors import BaseInferenceToolkitError\n"
        "model = inference.model_fn(sys.argv[1])\n"
        "body = bytearray(open(sys.argv[2], 'rb').read())\n"
        "out, media = inference.output_fn(inference.predict_fn(inference.input_fn(body, 'image/png'), model), '*/*')\n"
        "try:\n"
        "    inference.input_fn(b'a,b', 'text/csv')\n"
        "except BaseInferenceToolkitError as exc:\n"
        "    error = [exc.status_code, exc.phrase]\n"
        "print(json.dumps({'out': json.loads(out), 'media': media, 'error': error, 'files': [\n"
        "    inference.__file__, utils.__file__, model_def.__file__, images.__file__, prediction.__file__],\n"
        "    'sklearn': 'sklearn' in sys.modules, 'engine': 'engine' in sys.modules}))\n")
    code = str(trained.model_dir / "code")
    path = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), code, str(tmp_path / "stub")) if p)
    result = subprocess.run([sys.executable, "-c", script, str(trained.model_dir), trained.test_paths[0]],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path,
                            env=dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert all(os.path.dirname(f) == code for f in got["files"]), got["files"]
    assert got["sklearn"] is False and got["engine"] is False  # the endpoint gets no training engine
    assert got["media"] == "application/json"
    assert got["error"][0] == 415 and "text/csv" in got["error"][1]
    np.testing.assert_allclose(probs_of(got["out"]["predictions"]), reference[1][:1], atol=TOL)


# ---------------------------------------------------------------- round trips against train.py's evaluation
def test_png_matches_training_evaluation(trained, model, reference):
    _, expected = reference
    predictions = [ask(model, read(p), "image/png")[0] for p in trained.test_paths]
    np.testing.assert_allclose(probs_of(predictions), expected, atol=TOL)
    config = json.loads((trained.model_dir / "model_config.json").read_text())
    for p, prob in zip(predictions, expected):
        assert set(p) == {"label", "index", "probabilities", "decision"}
        # the label is the operating point's decision (chosen on val, in model_config.json), and the answer says so
        assert p["decision"] == {"rule": config["threshold_rule"], "positive_class": "pneumonia",
                                 "threshold": config["threshold"],
                                 "positive_class_from": "the other class of 'normal', a name meaning no finding"}
        assert p["index"] == int(prob[1] >= config["threshold"]) and p["label"] == CLASSES[p["index"]]
        assert list(p["probabilities"]) == CLASSES and abs(sum(p["probabilities"].values()) - 1) < 1e-5


def test_served_probabilities_are_evaluations_own(trained, model):
    """metrics.json's per-image test probabilities (calibrated with the temperature fitted on val) are what the
    endpoint answers for the same files, within 1e-5."""
    metrics = json.loads((trained.root / "output" / "data" / "metrics.json").read_text())
    config = json.loads((trained.model_dir / "model_config.json").read_text())
    assert config["temperature"] == metrics["decisions"]["temperature"] and config["temperature"] != 1.0
    saved = metrics["test_predictions"]
    paths = [os.path.join(trained.data, "test", *name.split("/")) for name in saved["images"]]
    served = probs_of([ask(model, read(p), "application/x-image")[0] for p in paths])
    np.testing.assert_allclose(served, np.asarray(saved["probabilities"]), atol=1e-5)
    assert metrics["val_predictions"]["images"] and len(metrics["val_predictions"]["probabilities"]) == 16


@pytest.mark.parametrize("image_size, stride", [(100, 2), (160, 4)])
def test_a_model_trained_on_larger_images_is_served_with_its_own_stem(tmp_path, image_size, stride):
    """train.py saves smallcnn's stem stride (model_config.json's architecture_options); the endpoint rebuilds
    that network, and answers what evaluation computed for the same test files."""
    data = make_dataset(tmp_path / "data", counts={"train": 8, "val": 4, "test": 4})
    model_dir = tmp_path / "model"
    cmd = [sys.executable, os.path.join(CODE, "train.py"), "--epochs", "1", "--image-size", str(image_size),
           "--train", os.path.join(data, "train"), "--val", os.path.join(data, "val"), "--test",
           os.path.join(data, "test"), "--model-dir", str(model_dir), "--output-data-dir", str(tmp_path / "out"),
           "--output-dir", str(tmp_path / "output"), "--checkpoint-dir", ""]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    config = json.loads((model_dir / "model_config.json").read_text())
    assert config["image_size"] == image_size and config["architecture_options"] == {"stem_stride": stride}
    loaded = inference.model_fn(str(model_dir))  # load_state_dict is strict: the stem must be the trained one
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())["test_predictions"]
    paths = [os.path.join(data, "test", *name.split("/")) for name in saved["images"]]
    served = probs_of([ask(loaded, read(p), "application/x-image")[0] for p in paths])
    np.testing.assert_allclose(served, np.asarray(saved["probabilities"]), atol=TOL)


def test_jpeg_matches_training_decode_of_the_same_file(trained, model, tmp_path):
    paths = []
    for i, src in enumerate(trained.test_paths[::3]):
        paths.append(str(tmp_path / f"{i}.jpg"))
        Image.open(src).convert("RGB").save(paths[-1], quality=85)
    _, expected = training_eval(trained.model_dir, paths)
    got = [ask(model, read(p), "image/jpeg")[0] for p in paths]
    np.testing.assert_allclose(probs_of(got), expected, atol=TOL)


def test_npy_layouts_give_one_prediction_per_image_in_order(model, reference):
    images, expected = reference
    gray = images[:, 0].numpy()  # (N, H, W) uint8, exactly the training decode
    for array in (gray, gray[..., None], gray[:, None], (gray / 255.0).astype(np.float32)):
        np.testing.assert_allclose(probs_of(ask(model, npy(array), "application/x-npy")), expected, atol=TOL)
    for single in (gray[3], gray[3][..., None], gray[3][None]):
        got = ask(model, npy(single), "application/x-npy")
        assert len(got) == 1
        np.testing.assert_allclose(probs_of(got), expected[3:4], atol=TOL)


def test_big_batches_are_predicted_in_chunks(model, reference, monkeypatch):
    images, expected = reference
    monkeypatch.setattr(inference, "BATCH_SIZE", 3)
    got = ask(model, npy(images.numpy()), "application/x-npy")
    np.testing.assert_allclose(probs_of(got), expected, atol=TOL)


def test_json_forms(trained, model, reference):
    images, expected = reference
    gray = images[:, 0].numpy()
    instances = json.dumps({"instances": [g.tolist() for g in gray]})  # the toolkit hands JSON over as str
    np.testing.assert_allclose(probs_of(ask(model, instances, "application/json")), expected, atol=TOL)
    bare = json.dumps(gray.tolist()).encode()
    np.testing.assert_allclose(probs_of(ask(model, bare, "application/json; charset=utf-8")), expected, atol=TOL)
    layouts = json.dumps({"instances": [gray[0][None].tolist(), gray[1][..., None].tolist(),
                                        (gray[2] / 255).tolist()]})
    np.testing.assert_allclose(probs_of(ask(model, layouts, "application/json")), expected[:3], atol=TOL)
    b64 = [base64.b64encode(read(p)).decode() for p in trained.test_paths[:2]]
    got = ask(model, json.dumps({"image": b64[0]}), "application/json")
    np.testing.assert_allclose(probs_of(got), expected[:1], atol=TOL)
    got = ask(model, json.dumps({"instances": [{"b64": b64[1]}, {"b64": "data:image/png;base64," + b64[0]}]}),
              "application/json")
    np.testing.assert_allclose(probs_of(got), expected[[1, 0]], atol=TOL)


def test_other_sizes_and_colour_are_decoded_as_in_training(trained, model, reference, tmp_path):
    """A 40x40 RGB image is converted to grey and resized exactly as train.py would, in every format."""
    images, expected = reference
    big = np.asarray(Image.fromarray(images[0, 0].numpy()).resize((40, 40), Image.NEAREST))
    rgb = np.stack([big] * 3, axis=-1)
    path = tmp_path / "big.png"
    path.write_bytes(png(rgb))
    _, want = training_eval(trained.model_dir, [str(path)])
    for body, media in ((path.read_bytes(), "image/png"), (npy(rgb), "application/x-npy"),
                        (npy(rgb.transpose(2, 0, 1)[None]), "application/x-npy"),
                        (json.dumps({"instances": [rgb.transpose(2, 0, 1).tolist()]}), "application/json"),
                        (json.dumps([rgb.tolist()]), "application/json")):
        np.testing.assert_allclose(probs_of(ask(model, body, media)), want, atol=TOL)
    # a bare 3-D array whose first axis is not the model's channel count is a batch (N, H, W)
    assert len(ask(model, npy(rgb.transpose(2, 0, 1)), "application/x-npy")) == 3


def test_tta_follows_the_saved_config(trained, reference, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(trained.model_dir, model_dir)
    config = json.loads((model_dir / "model_config.json").read_text())
    (model_dir / "model_config.json").write_text(json.dumps(dict(config, tta=False)))
    _, expected = training_eval(model_dir, trained.test_paths, tta=False)
    got = ask(inference.model_fn(str(model_dir)), npy(reference[0].numpy()), "application/x-npy")
    np.testing.assert_allclose(probs_of(got), expected, atol=TOL)


@pytest.mark.parametrize("accept", [None, "", "*/*", "application/json", "application/json; charset=utf-8",
                                    "text/html, application/json;q=0.9", "application/*"])
def test_json_is_served_for_every_accept_that_allows_it(accept):
    text, media = inference.output_fn({"predictions": []}, accept)
    assert media == "application/json" and json.loads(text) == {"predictions": []}


# ---------------------------------------------------------------- refused requests
def status_of(call, *args):
    with pytest.raises(inference.InferenceError) as info:
        call(*args)
    exc = info.value
    assert "\n" not in exc.message and str(exc) == exc.message == exc.phrase and len(exc.message) < 400
    return exc.status_code, exc.message


def png_chunk(kind, payload):
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_bomb(width=100_000, height=100_000):
    """A few hundred bytes that claim a width x height greyscale image."""
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    body = png_chunk(b"IDAT", zlib.compress(b"\x00" * 10_000))
    return b"\x89PNG\r\n\x1a\n" + header + body + png_chunk(b"IEND", b"")


def object_npy():
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    return buf.getvalue()


def npz():
    buf = io.BytesIO()
    np.savez(buf, x=np.zeros((4, 4), np.uint8))
    return buf.getvalue()


GOOD_PNG = png(np.full((16, 16), 90, np.uint8))
BAD_INPUTS = {
    "csv": (b"1,2,3", "text/csv", 415, "text/csv"),
    "no content type": (GOOD_PNG, None, 415, "not supported"),
    "empty image": (b"", "image/png", 400, "empty"),
    "empty json": ("", "application/json", 400, "empty"),
    "oversized": (b"\x89PNG\r\n\x1a\n" + bytes(10 * 1024 * 1024), "image/png", 413, "above the limit"),
    "bomb": (png_bomb(), "image/png", 413, "100000x100000 pixels is above the limit of 64000000"),
    "too many pixels": (png_bomb(9000, 9000), "image/png", 413, "9000x9000 pixels is above the limit of 64000000"),
    "not an image": (b"GIF89a" + bytes(100), "image/png", 400, "not a readable PNG, JPEG, TIFF"),
    "text as octets": (b"hello world", "application/octet-stream", 400, "not a readable PNG, JPEG, TIFF"),
    "eps (never handed to Ghostscript)": (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n",
                                          "application/x-image", 400, "not a readable PNG, JPEG, TIFF"),
    "corrupt png": (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "image/png", 400, "not a readable"),
    "truncated png": (GOOD_PNG[: len(GOOD_PNG) // 2], "image/png", 400, "not a readable"),
    "corrupt jpeg": (b"\xff\xd8\xff\xe0" + bytes(500), "image/jpeg", 400, "not a readable"),
    "pickled npy": (object_npy(), "application/x-npy", 400, "pickle"),
    "npz": (npz(), "application/x-npy", 400, "not a .npy array"),
    "truncated npy": (npy(np.zeros((8, 16, 16), np.uint8))[:-100], "application/x-npy", 400, "truncated"),
    "5-d npy": (npy(np.zeros((1, 1, 1, 4, 4), np.uint8)), "application/x-npy", 400, "has shape"),
    "empty npy": (npy(np.zeros((0, 16, 16), np.uint8)), "application/x-npy", 400, "has shape"),
    "int range": (npy(np.full((4, 4), 300, np.int32)), "application/x-npy", 400, "0..255"),
    "float range": (npy(np.full((4, 4), 2.0)), "application/x-npy", 400, "[0, 1]"),
    "nan": (npy(np.full((4, 4), np.nan)), "application/x-npy", 400, "NaN"),
    "bool": (npy(np.ones((4, 4), bool)), "application/x-npy", 400, "dtype bool"),
    "bad json": ("{not json", "application/json", 400, "not valid JSON"),
    "ragged": (json.dumps([[1, 2], [3]]), "application/json", 400, "rectangular"),
    "strings": (json.dumps([["a", "b"]]), "application/json", 400, "dtype"),
    "wrong keys": (json.dumps({"inputs": [[1]]}), "application/json", 400, "unexpected JSON"),
    "no instances": (json.dumps({"instances": []}), "application/json", 400, '"instances" is empty'),
    "string instance": (json.dumps({"instances": ["abc"]}), "application/json", 400, "instance 0"),
    "batch instance": (json.dumps({"instances": [np.zeros((2, 2, 4, 4)).tolist()]}), "application/json", 400,
                       "one image"),
    "bad base64": (json.dumps({"image": "%%%"}), "application/json", 400, "base64"),
    "base64 of text": (json.dumps({"image": base64.b64encode(b"hello").decode()}), "application/json", 400,
                       "not a readable PNG, JPEG, TIFF"),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_requests_are_refused_with_a_status_and_one_line(name):
    body, content_type, status, words = BAD_INPUTS[name]
    code, message = status_of(inference.input_fn, body, content_type)
    assert (code, words in message) == (status, True), message
    assert " at 0x" not in message and "\n" not in message, message  # for a reader: no object addresses


def test_limits_are_read_from_the_environment_at_each_request(monkeypatch):
    monkeypatch.setenv("INFERENCE_MAX_REQUEST_BYTES", str(len(GOOD_PNG) - 1))
    code, message = status_of(inference.input_fn, GOOD_PNG, "image/png")
    assert code == 413 and "INFERENCE_MAX_REQUEST_BYTES" in message
    monkeypatch.delenv("INFERENCE_MAX_REQUEST_BYTES")
    monkeypatch.setenv("INFERENCE_MAX_IMAGE_PIXELS", "255")
    code, message = status_of(inference.input_fn, GOOD_PNG, "image/png")
    assert code == 413 and "16x16 pixels is above the limit of 255" in message
    monkeypatch.setenv("INFERENCE_MAX_IMAGE_PIXELS", "lots")
    code, message = status_of(inference.input_fn, GOOD_PNG, "image/png")
    assert code == 500 and "INFERENCE_MAX_IMAGE_PIXELS='lots'" in message


@pytest.mark.parametrize("pillow_limit", [None, 100, Image.MAX_IMAGE_PIXELS])
def test_the_pixel_limit_is_the_endpoints_whatever_pillow_was_set_to(monkeypatch, pillow_limit):
    """Pillow's own bomb check is a process-wide setting (89 Mpx by default, or whatever ran before set it):
    INFERENCE_MAX_IMAGE_PIXELS must be the one limit, with one message."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pillow_limit)
    assert len(inference.input_fn(GOOD_PNG, "image/png")) == 1  # 256 px, above a Pillow limit of 100
    code, message = status_of(inference.input_fn, png_bomb(), "image/png")
    assert code == 413 and "100000x100000 pixels is above the limit of 64000000" in message, message
    monkeypatch.setenv("INFERENCE_MAX_IMAGE_PIXELS", str(300_000_000))
    code, message = status_of(inference.input_fn, png_bomb(10_000, 10_000), "image/png")  # 100 Mpx, allowed
    assert code == 400 and "not a readable" in message, message  # decoded (and found truncated), not refused


def test_arrays_without_a_channel_axis_are_refused(model):
    data = inference.input_fn(npy(np.zeros((2, 5, 16, 16), np.uint8)), "application/x-npy")
    code, message = status_of(inference.predict_fn, data, model)
    assert code == 400 and "(2, 5, 16, 16)" in message


def test_unsupported_accept_is_refused():
    code, message = status_of(inference.output_fn, {"predictions": []}, "text/csv")
    assert code == 406 and "text/csv" in message and "application/json" in message and "application/x-npy" in message


# ---------------------------------------------------------------- every format train.py reads, as SageMaker sends it
def encoded(array, fmt, mode=None, **save):
    im = Image.fromarray(array)
    if mode:
        im = im.convert(mode)
    buf = io.BytesIO()
    im.save(buf, format=fmt, **save)
    return buf.getvalue()


def test_every_training_format_is_served_under_every_raw_image_type(trained, model, reference, tmp_path):
    """The format comes from the bytes: a TIFF sent as image/png, a PNG as application/octet-stream (the SDK's
    IdentitySerializer default) or application/x-image (AWS's image algorithms' type) are all decoded by the training
    decoder, and give train.py's probabilities for that very file."""
    pixels = reference[0][0, 0].numpy()
    wide = (pixels.astype(np.uint16) * 257)
    files = {"png": encoded(pixels, "PNG"), "png16": encoded(wide, "PNG"), "tiff": encoded(pixels, "TIFF"),
             "tiff16": encoded(wide, "TIFF"), "bmp": encoded(pixels, "BMP"), "gif": encoded(pixels, "GIF"),
             "webp": encoded(pixels, "WEBP", lossless=True), "jpeg": encoded(pixels, "JPEG", quality=95),
             "palette": encoded(pixels, "PNG", mode="P"), "rgba": encoded(pixels, "PNG", mode="RGBA")}
    for name, blob in files.items():
        path = tmp_path / f"{name}.img"
        path.write_bytes(blob)
        _, expected = training_eval(trained.model_dir, [str(path)])
        for content_type in ("image/png", "image/tiff", "application/x-image", "application/octet-stream"):
            got = ask(model, blob, content_type)
            np.testing.assert_allclose(probs_of(got), expected, atol=TOL, err_msg=f"{name} as {content_type}")
        b64 = json.dumps({"instances": [{"b64": base64.b64encode(blob).decode()}]})
        np.testing.assert_allclose(probs_of(ask(model, b64, "application/json")), expected, atol=TOL, err_msg=name)


@pytest.mark.parametrize("accept", ["application/x-npy", "application/x-npy; q=1"])
def test_npy_is_served_when_asked_for_as_the_sdk_predictor_does(model, reference, accept):
    """PyTorchPredictor's defaults: NumpySerializer in, NumpyDeserializer out (Accept application/x-npy)."""
    images, expected = reference
    body, media = inference.output_fn(inference.predict_fn(inference.input_fn(npy(images.numpy()),
                                                                               "application/x-npy"), model), accept)
    assert media == "application/x-npy"
    got = np.load(io.BytesIO(body), allow_pickle=False)
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=TOL)


# ---------------------------------------------------------------- model_fn loads weights only
def test_model_fn_loads_with_weights_only(trained, monkeypatch):
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    loaded = inference.model_fn(str(trained.model_dir))
    assert calls and all(c.get("weights_only") is True for c in calls)
    assert not loaded.model.training and loaded.classes == CLASSES and loaded.device.type in ("cpu", "cuda")


class _Payload:
    """Unpickling this creates a folder: what a malicious model.pth could do instead."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_model_fn_refuses_a_checkpoint_that_needs_unpickling(trained, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(trained.model_dir, model_dir)
    marker = tmp_path / "was-run"
    torch.save({"weights": _Payload(str(marker))}, model_dir / "model.pth")
    with pytest.raises(inference.ModelLoadError, match=r"weights_only=True"):
        inference.model_fn(str(model_dir))
    assert not marker.exists()
    torch.load(model_dir / "model.pth", weights_only=False)  # the file really does run code when trusted
    assert marker.exists()


def test_model_fn_without_config_says_what_to_deploy(tmp_path):
    with pytest.raises(inference.ModelLoadError, match="deploy the model.tar.gz that train.py wrote"):
        inference.model_fn(str(tmp_path))
