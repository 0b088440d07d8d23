"""SageMaker PyTorch inference handlers (model_fn, input_fn, predict_fn, output_fn) for models from train.py.

model.tar.gz holds model.pth (state_dict; a K-fold ensemble's member 0, its other members in members/, named by
model_config.json's ``ensemble.files``, each loaded and their calibrated probabilities averaged), model_config.json, label_dict.json and code/ (this file and the
modules it imports: model_def, model_config, prediction, images, errors, utils; not the training engine).
Images are decoded and normalised exactly as train.py evaluates them.

Requests (Content-Type; parameters such as ``; charset=utf-8`` are ignored):
  image/* (image/png, image/jpeg, image/tiff, ...), application/x-image, application/octet-stream
                         one image file in any format train.py reads (PNG, JPEG, TIFF, BMP, GIF, WebP; 8- or
                         16-bit, grey, colour, palette), the format decided from its bytes, not from the type.
  application/x-npy      numpy.save output, never unpickled: one image (H,W), (H,W,C), (C,H,W) or a batch
                         (N,H,W), (N,H,W,C), (N,C,H,W), where C is 1, 3 or 4. A 3-D array is (H,W,C) when its
                         last axis is 1, 3 or 4; else one (C,H,W) image when its first axis equals the model's
                         in_channels; else a batch (N,H,W). Send 4-D arrays to leave no doubt.
  application/json       {"instances": [image, ...]}, each instance one image as a nested list ((H,W), (H,W,C)
                         or (C,H,W)) or {"b64": "<base64 image file>"}; {"image": "<base64 image file>"}; or a
                         bare nested list, read like an npy array.
Image files are read as train.py reads them (images.open_image): as a viewer shows them (their EXIF orientation
applied), at model_config.json's ``page`` of a multi-page TIFF or animated GIF/WebP/PNG (the page hyperparameter
the model was trained with; 0 for older models; a file without that page is a 400), float pixels that are NaN or
-inf as the darkest and +inf as the brightest of the finite ones (a file without a finite pixel is a 400).
Pixel values: integers must be 0..255 and are used as decoded 8-bit pixels; floats must be finite and in
[0, 1] and become round(255 * x). Then, as in training: converted to the model's channels (grey or RGB),
resized to image_size x image_size (bilinear), scaled to [0, 1] and normalised with the saved mean/std.

Response, one entry per image in request order:
  Accept application/json, */* or none:
    {"predictions": [{"label": "pneumonia", "index": 1, "probabilities": {"normal": 0.1, "pneumonia": 0.9},
                      "decision": {"rule": "Youden's J on val", "positive_class": "pneumonia", "threshold": 0.31,
                                   "positive_class_from": "the other class of 'normal', a name meaning no finding"}}]}
    Probabilities are calibrated (model_config.json's temperature). A binary model's label is the positive class
    when its probability reaches the operating threshold chosen on val, else the other class (the decision says
    which class is positive and why: model_config.json's positive_class, positive_class_from); a model of more
    classes answers the argmax class ({"decision": {"rule": "argmax"}}).
    multi-label models: {"predictions": [{"findings": ["Effusion"], "probabilities": {"Effusion": 0.81, ...},
    "thresholds": {"Effusion": 0.5, ...}}]} (a sigmoid probability per finding; listed when >= its threshold)
  Accept application/x-npy (what the SDK's PyTorchPredictor asks for by default): numpy.save of the
    probabilities, float32 (N, K), columns in model_config.json's class order.

Errors are InferenceError (a sagemaker_inference BaseInferenceToolkitError in the container, so the toolkit
answers with its status_code; anything else becomes a 500) with a one-line message: 400 malformed body, 406
unsupported Accept, 413 body or image too large, 415 unsupported Content-Type.

Environment, read at every request: INFERENCE_MAX_REQUEST_BYTES (default 10 MiB; SageMaker itself refuses
real-time requests above 6 MB and serverless ones above 4 MB before they arrive, and the client package sets it
per deployment for asynchronous endpoints, up to 1 GB, and batch transform, up to MaxPayloadInMB),
INFERENCE_MAX_IMAGE_PIXELS (default 64,000,000, as train.py's max-image-pixels).

Devices: on a multi-GPU instance the inference toolkit starts one worker per GPU and gives model_fn a context;
each worker loads the model on its own GPU (``serving_device``).
"""
import base64
import binascii
import io
import json
import logging
import math
import os

import numpy as np
import torch
from PIL import Image

import images
import model_config
import model_def
import prediction
from errors import BadImageError, ImageTooLargeError
from model_config import ModelLoadError
from utils import json_safe, one_line

try:  # shipped by the SageMaker inference containers: its status_code becomes the HTTP status
    from sagemaker_inference.errors import BaseInferenceToolkitError as _ErrorBase
except ImportError:  # tests and local use
    _ErrorBase = Exception

logger = logging.getLogger("inference")

NPY, JSON = "application/x-npy", "application/json"
RAW_IMAGE_TYPES = ("application/x-image", "application/octet-stream")  # and every image/* type
SUPPORTED = f"an image file (image/*, application/x-image, application/octet-stream), {NPY} or {JSON}"
READABLE = "PNG, JPEG, TIFF, BMP, GIF or WebP"
MAX_REQUEST_BYTES_ENV, DEFAULT_MAX_REQUEST_BYTES = "INFERENCE_MAX_REQUEST_BYTES", 10 * 1024 * 1024
MAX_IMAGE_PIXELS_ENV, DEFAULT_MAX_IMAGE_PIXELS = "INFERENCE_MAX_IMAGE_PIXELS", 64_000_000
BATCH_SIZE = 64  # images per forward pass
CHANNEL_SIZES = (1, 3, 4)
JSON_SHAPES = ('{"instances": [<nested list of pixels> or {"b64": "<base64 image file>"}, ...]}, '
               '{"image": "<base64 image file>"} or a nested list of pixels')


# ==================================================================================================
# Errors
# ==================================================================================================
class InferenceError(_ErrorBase):
    """A request the endpoint refuses: ``status_code`` is the HTTP status, ``message`` one clear line."""

    def __init__(self, status_code, message):
        message = one_line(message)
        Exception.__init__(self, message)
        self.status_code, self.message, self.phrase = status_code, message, message

    def __str__(self):
        return self.message


def _env_int(name, default):
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number <= 0:
        raise InferenceError(500, f"{name}={value!r} is not a positive whole number; fix the endpoint's environment")
    return number


# ==================================================================================================
# model_fn
# ==================================================================================================
class LoadedModel:
    """What model_fn returns: the model in eval mode, its config, class names and device."""

    def __init__(self, model, config, device, members=None):
        self.model, self.config, self.device = model, config, device
        self.members = list(members) if members else [model]  # a K-fold ensemble's models; ``model`` is member 0
        self.classes = list(config["classes"])
        self.channels, self.size = int(config["in_channels"]), int(config["image_size"])
        self.page = int(config.get("page") or 0)
        self.mean, self.std = list(config["mean"]), list(config["std"])
        self.tta = bool(config.get("tta", False))
        self.multilabel = config.get("task") == "multilabel"
        self.thresholds = list(config.get("thresholds") or [])
        self.temperature = config.get("temperature", 1.0)
        self.threshold, self.threshold_rule = config.get("threshold"), config.get("threshold_rule", "argmax")
        self.positive, self.positive_from = config.get("positive_index", 1), config.get("positive_class_from")


def member_files(config):
    """The weights files of the model, relative to the model dir: a K-fold ensemble's members
    (model_config.json's ``ensemble.files``: model.pth is member 0), else the one ``weights`` file."""
    ensemble = config.get("ensemble") or {}
    files = ensemble.get("files") or [os.path.basename(config.get("weights") or "model.pth")]
    for name in files:
        parts = str(name).replace("\\", "/").split("/")
        if os.path.isabs(str(name)) or ".." in parts or not name:
            raise ModelLoadError(f"model_config.json names the weights file {name!r} outside the model directory; "
                                 "deploy the model.tar.gz that train.py wrote")
    return list(files)


def load_weights(model_dir, config, name=None):
    """The state_dict of ``name`` (default: the config's one weights file), loaded with weights_only=True: a file
    that needs arbitrary unpickling is refused."""
    path = os.path.join(model_dir, name or os.path.basename(config.get("weights") or "model.pth"))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - missing, corrupt, or not plain weights
        raise ModelLoadError(f"cannot load {path} as plain weights with torch.load(weights_only=True) "
                             f"({type(exc).__name__}: {one_line(exc, 300)}); it must be the state_dict "
                             "train.py saves") from exc


def serving_device(context=None):
    """The device this worker serves on. The inference toolkit starts one worker per GPU and passes each a context
    whose ``system_properties["gpu_id"]`` is its GPU: ``cuda:<gpu_id>``, so that every GPU of the instance holds a
    copy of the model, not GPU 0 all of them. Without a context (older toolkits) or a gpu_id: ``cuda`` (the
    current GPU) when there is one; the CPU when there is none (a CPU instance, serverless)."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    properties = getattr(context, "system_properties", None) or {}
    gpu_id = properties.get("gpu_id") if isinstance(properties, dict) else None
    if gpu_id is None or gpu_id == "":
        return torch.device("cuda")
    count = torch.cuda.device_count()
    try:
        index = int(gpu_id)
    except (TypeError, ValueError):
        index = -1
    if not 0 <= index < count:
        raise ModelLoadError(f"the model server gave this worker gpu_id={gpu_id!r}, but the instance has {count} "
                             f"GPU(s) (0..{count - 1}); check SAGEMAKER_MODEL_SERVER_WORKERS and the instance type")
    return torch.device(f"cuda:{index}")


def model_fn(model_dir, context=None):
    """Rebuild the architecture from model_config.json and load model.pth on this worker's device
    (``serving_device``: the GPU the toolkit's ``context`` names, else the GPU when there is one, else the CPU).
    Two parameters, so that the inference toolkit passes its context; older callers pass ``model_dir`` alone."""
    config = model_config.read(model_dir)
    device = serving_device(context)
    if device.index is not None:  # this worker's CUDA context on its own GPU too, not on GPU 0
        torch.cuda.set_device(device)
    members = []
    for name in member_files(config):
        model = model_def.create_model(config["architecture"], config["num_classes"], config["in_channels"],
                                       pretrained=False, **config["architecture_options"])
        model.load_state_dict(load_weights(model_dir, config, name))
        members.append(model.to(device).eval())
    logger.info("loaded %s (%d classes, %d colour channel(s), %d px, tta=%s%s) on %s", config["architecture"],
                config["num_classes"], config["in_channels"], config["image_size"], config.get("tta"),
                f", {len(members)} K-fold members averaged" if len(members) > 1 else "", device)
    return LoadedModel(members[0], config, device, members)


# ==================================================================================================
# input_fn
# ==================================================================================================
class ArrayInput:
    """uint8 pixels from npy or JSON; ``batch``: may hold several images (split by predict_fn)."""

    def __init__(self, pixels, batch):
        self.pixels, self.batch = pixels, batch


class FileInput:
    """An image file of the request: its bytes, how the request names it, and its first page, decoded when the
    request arrives (so that a bad file is refused by input_fn); predict_fn reads the model's page."""

    def __init__(self, data, what, first_page):
        self.data, self.what, self.first_page = data, what, first_page

    def image(self, page):
        return self.first_page if page == 0 else decode_image(self.data, self.what, page)


def input_fn(request_body, content_type):
    """Request body -> list of PIL images and ArrayInputs (the model's size and channels are applied later)."""
    media = str(content_type or "").split(";")[0].strip().lower()
    raw_image = media.startswith("image/") or media in RAW_IMAGE_TYPES
    if not (raw_image or media in (NPY, JSON)):
        raise InferenceError(415, f"Content-Type {content_type!r} is not supported; send {SUPPORTED}")
    body = _body_bytes(request_body)
    if raw_image:
        return [file_input(body, "the request body")]
    if media == NPY:
        return [ArrayInput(to_pixels(load_npy(body), "the npy array", batch=True), batch=True)]
    return parse_json(body)


def _body_bytes(body):
    if isinstance(body, str):
        body = body.encode("utf-8")
    elif isinstance(body, (bytearray, memoryview)):
        body = bytes(body)
    elif body is None:
        body = b""
    elif not isinstance(body, bytes):
        raise InferenceError(400, f"the request body is a {type(body).__name__}, not bytes")
    if not body:
        raise InferenceError(400, f"the request body is empty; send one image or an array as {SUPPORTED}")
    limit = _env_int(MAX_REQUEST_BYTES_ENV, DEFAULT_MAX_REQUEST_BYTES)
    if len(body) > limit:
        raise InferenceError(413, f"the request body is {len(body)} bytes, above the limit of {limit}; send fewer "
                                  f"or smaller images per request, or raise {MAX_REQUEST_BYTES_ENV}")
    return body


def file_input(data, what):
    """Image file bytes -> FileInput, its first page decoded (refused here when it cannot be)."""
    return FileInput(data, what, decode_image(data, what))


def decode_image(data, what, page=0):
    """Image file bytes -> loaded PIL image of page ``page``, through images.open_image (the training decoder, its
    formats, orientation, page and pixel guard): the format comes from the bytes."""
    limit = _env_int(MAX_IMAGE_PIXELS_ENV, DEFAULT_MAX_IMAGE_PIXELS)
    try:
        return images.open_image(io.BytesIO(data), limit, page)
    except ImageTooLargeError as exc:
        raise InferenceError(413, f"{what} is too large to decode: {exc}; downscale it or raise "
                                  f"{MAX_IMAGE_PIXELS_ENV}") from exc
    except BadImageError as exc:
        raise InferenceError(400, f"{what} is not a readable {READABLE} image ({exc}); send a complete image file, "
                                  f"or pixels as {NPY} or {JSON}") from exc


def load_npy(data):
    """numpy.save bytes -> array, refusing pickled objects and checking the header against the body first."""
    fp = io.BytesIO(data)
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fp)
        readers = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}
        if version not in readers:
            raise ValueError(f"npy format version {version} is not supported")
        shape, _, dtype = readers[version](fp)
    except (ValueError, TypeError, EOFError, SyntaxError) as exc:
        raise InferenceError(400, f"the request body is not a .npy array ({exc}); send numpy.save output "
                                  f"as {NPY}") from exc
    if dtype.hasobject:
        raise InferenceError(400, "the npy array holds Python objects, which would need pickle (refused); send "
                                  "a numeric uint8 or float array")
    needed = math.prod(shape) * dtype.itemsize
    if len(data) - fp.tell() < needed:
        raise InferenceError(400, f"the npy array is truncated: shape {tuple(shape)} of {dtype} needs {needed} "
                                  f"bytes, the body has {len(data) - fp.tell()}; send the whole numpy.save output")
    fp.seek(0)
    try:
        return fmt.read_array(fp, allow_pickle=False)
    except (ValueError, TypeError, EOFError) as exc:
        raise InferenceError(400, f"cannot read the npy array ({exc}); send numpy.save output") from exc


def parse_json(data):
    try:
        payload = json.loads(data)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise InferenceError(400, f"the request body is not valid JSON ({exc}); send {JSON_SHAPES}") from exc
    if isinstance(payload, list):
        return [ArrayInput(json_pixels(payload, "the JSON array", batch=True), batch=True)]
    if isinstance(payload, dict) and isinstance(payload.get("image"), str):
        return [file_input(b64decode(payload["image"], '"image"'), '"image"')]
    if isinstance(payload, dict) and isinstance(payload.get("instances"), list):
        if not payload["instances"]:
            raise InferenceError(400, '"instances" is empty; send at least one image')
        return [json_instance(item, f"instance {i}") for i, item in enumerate(payload["instances"])]
    raise InferenceError(400, f"unexpected JSON {_shape_of(payload)}; send {JSON_SHAPES}")


def _shape_of(payload):
    if isinstance(payload, dict):
        return f"object with keys {sorted(payload)[:5]}"
    return f"{type(payload).__name__}"


def json_instance(item, what):
    if isinstance(item, dict) and isinstance(item.get("b64"), str):
        return file_input(b64decode(item["b64"], what), what)
    if isinstance(item, list):
        return ArrayInput(json_pixels(item, what, batch=False), batch=False)
    raise InferenceError(400, f"{what} is a {_shape_of(item)}, not an image; each instance is a nested list of "
                              'pixels or {"b64": "<base64 image file>"}')


def b64decode(value, what):
    if value.startswith("data:") and "," in value:  # a data URL
        value = value.split(",", 1)[1]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InferenceError(400, f"{what} is not valid base64 ({exc}); base64-encode the image file") from exc


def json_pixels(value, what, batch):
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as exc:  # ragged lists
        raise InferenceError(400, f"{what} is not a rectangular array of numbers ({exc}); give every image "
                                  "the same height, width and channels, or send them as separate instances") from exc
    return to_pixels(array, what, batch)


def to_pixels(array, what, batch):
    """Validate an array's rank and values and return it as uint8 (see the module docstring for the rules)."""
    ranks = (2, 3, 4) if batch else (2, 3)
    if array.ndim not in ranks or array.size == 0:
        raise InferenceError(400, f"{what} has shape {array.shape}; expected {_expected_shapes(batch)}")
    if array.dtype.kind in "ui":
        lo, hi = int(array.min()), int(array.max())
        if lo < 0 or hi > 255:
            raise InferenceError(400, f"{what} has integer values {lo}..{hi}; integer pixels must be 0..255 "
                                      "(send 16-bit images as PNG, or floats in [0, 1])")
        return array.astype(np.uint8)
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise InferenceError(400, f"{what} holds NaN or infinity; send finite values")
        lo, hi = float(array.min()), float(array.max())
        if lo < 0 or hi > 1:
            raise InferenceError(400, f"{what} has float values {lo:g}..{hi:g}; float pixels must be in [0, 1] "
                                      "(divide 0-255 pixels by 255, or send them as integers)")
        return np.rint(array.astype(np.float64) * 255).astype(np.uint8)
    raise InferenceError(400, f"{what} has dtype {array.dtype}; send uint8 (0..255) or float (0..1) pixels")


def _expected_shapes(batch):
    one = "(H, W), (H, W, C) or (C, H, W) with C in 1, 3, 4"
    return f"{one}, or a batch (N, H, W), (N, H, W, C), (N, C, H, W)" if batch else f"one image {one}"


# ==================================================================================================
# predict_fn
# ==================================================================================================
def predict_fn(data, model):
    """Decoded inputs -> {"predictions": [...]}, one entry per image in order (the output_fn shape)."""
    images = to_batch(data, model.channels, model.size, model.page)
    probs = probabilities(model, images)
    if model.multilabel:
        return {"predictions": [findings_answer(p, model.classes, model.thresholds) for p in probs]}
    return {"predictions": [answer(p, model.classes, model.threshold, model.threshold_rule, positive=model.positive,
                                   positive_from=model.positive_from) for p in probs]}


def to_batch(items, channels, size, page=0):
    """FileInputs (read at ``page``), PIL images and ArrayInputs -> uint8 NCHW tensor at the model's channels and
    size, as training decodes."""
    arrays = []
    for item in items:
        if isinstance(item, FileInput):
            item = item.image(page)
        pil_images = [item] if isinstance(item, Image.Image) else split_images(item, channels)
        arrays += [images.decode(im, channels, size) for im in pil_images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def split_images(item, channels):
    """An ArrayInput -> PIL images, by the layout rules in the module docstring."""
    a = item.pixels
    if a.ndim == 2:
        hwc = [a[:, :, None]]
    elif a.ndim == 3 and a.shape[-1] in CHANNEL_SIZES:
        hwc = [a]
    elif a.ndim == 3 and (a.shape[0] == channels or (not item.batch and a.shape[0] in CHANNEL_SIZES)):
        hwc = [a.transpose(1, 2, 0)]
    elif a.ndim == 3 and item.batch:
        hwc = [img[:, :, None] for img in a]
    elif a.ndim == 4 and a.shape[-1] in CHANNEL_SIZES:
        hwc = list(a)
    elif a.ndim == 4 and a.shape[1] in CHANNEL_SIZES:
        hwc = list(a.transpose(0, 2, 3, 1))
    else:
        raise InferenceError(400, f"the array of shape {a.shape} has no channel axis of size 1, 3 or 4; "
                                  f"send {_expected_shapes(item.batch)}")
    return [Image.fromarray(np.ascontiguousarray(x[:, :, 0] if x.shape[-1] == 1 else x)) for x in hwc]


def probabilities(model, batch):
    """Probabilities (N, K) in float32 from a uint8 NCHW batch, by the forward pass train.py evaluates with; a
    K-fold ensemble's: the mean of its members' calibrated probabilities (prediction.mean_probabilities)."""
    out = []
    for start in range(0, len(batch), BATCH_SIZE):
        x = batch[start:start + BATCH_SIZE].to(model.device)
        if len(model.members) == 1:
            out.append(prediction.probabilities(model.model, x, mean=model.mean, std=model.std, tta=model.tta,
                                                multilabel=model.multilabel, temperature=model.temperature).cpu())
            continue
        logits = [prediction.logits(m, x, mean=model.mean, std=model.std, tta=model.tta) for m in model.members]
        out.append(prediction.mean_probabilities(logits, model.multilabel, model.temperature).cpu())
    return torch.cat(out).numpy()


def answer(prob, classes, threshold=None, rule="argmax", positive=1, positive_from=None):
    """One image of a single-label model: its label and every class's (calibrated) probability. A binary model with
    an operating threshold (chosen on val when it was trained) labels the positive class (index ``positive``) when
    its probability is >= the threshold, else the other class, and says so in ``decision`` (with where the choice of
    positive class came from, ``positive_from``); other models label the argmax class."""
    out = {"probabilities": {name: float(p) for name, p in zip(classes, prob)}}
    if threshold is None:
        index = int(np.argmax(prob))
        out["decision"] = {"rule": "argmax"}
    else:
        positive = 1 if positive is None else int(positive)
        index = positive if prob[positive] >= threshold else 1 - positive
        out["decision"] = {"rule": rule, "positive_class": classes[positive], "threshold": float(threshold)}
        if positive_from:
            out["decision"]["positive_class_from"] = positive_from
    return {"label": classes[index], "index": index, **out}


def findings_answer(prob, names, thresholds):
    """One image of a multi-label model: the findings at or above their thresholds, every finding's probability
    and the thresholds used (model_config.json's, chosen when the model was trained)."""
    return {"findings": [n for n, p, t in zip(names, prob, thresholds) if p >= t],
            "probabilities": {n: float(p) for n, p in zip(names, prob)},
            "thresholds": {n: float(t) for n, t in zip(names, thresholds)}}


# ==================================================================================================
# output_fn
# ==================================================================================================
def output_fn(prediction, accept):
    """The response body and its content type (the toolkit sets the response's Content-Type from the tuple):
    JSON, or the probabilities as an npy array when the client asks for application/x-npy."""
    media = response_type(accept)
    if media == NPY:
        probs = np.asarray([list(p["probabilities"].values()) for p in prediction["predictions"]], dtype=np.float32)
        buffer = io.BytesIO()
        np.save(buffer, probs, allow_pickle=False)
        return buffer.getvalue(), NPY
    return json.dumps(json_safe(prediction)), JSON


def response_type(accept):
    """JSON for no Accept, */*, application/* or application/json; npy for application/x-npy alone; else 406."""
    if not accept or not str(accept).strip():
        return JSON
    ranges = [part.split(";")[0].strip().lower() for part in str(accept).split(",")]
    if set(ranges) & {JSON, "application/*", "*/*"}:
        return JSON
    if NPY in ranges:
        return NPY
    raise InferenceError(406, f"Accept {accept!r} is not supported; ask for {JSON} (or */*) or {NPY}")
