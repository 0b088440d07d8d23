"""Batch transform: score every image under an S3 prefix with a trained model, then collect the answers into one
table (boto3 clients in; no SDK imported here: ``medimg.sdk_v2``/``sdk_v3``'s ``transform`` start the job).

    batch = transform.plan(s3, "s3://bucket/data/test/", "s3://bucket/prefix/batch/<job>")
    handle, job = builder.transform(spec, model_data, session, batch, job_name=job)
    transform.wait(sm, job)
    table = transform.collect(s3, batch)          # one row per image
    transform.write_csv(table, "build/notebook/batch/predictions.csv")

What the job is (SageMaker's own batch transform, SAGEMAKER_CONTRACT_2.md section 4):

- One request per image: the input is a ``ManifestFile`` listing the images under the prefix (files with an image
  extension train.py reads; anything else there, such as label_dict.json or labels.csv, is listed as skipped, not
  sent), ``SplitType`` None and ``BatchStrategy`` SingleRecord.
- One ContentType for the whole job: ``application/x-image`` for every image. code/inference.py decides the format
  from the bytes for every raw image type, so PNG, JPEG, TIFF, BMP, GIF and WebP files share one job.
- ``MaxPayloadInMB`` is the largest request: by default the smallest whole number of MB that holds the largest
  image, at least SageMaker's default of 6 and at most its limit of 100. An image above it (or above a
  ``max_payload_mb`` you set) is refused here, in one line, before a job is started: SageMaker would fail the job
  on it. The model that the job serves gets the matching container limits (``scoring.container_environment``) in
  its own environment, which network isolation keeps (the SDK drops a transform job's environment then).
- Answers: ``<output>/<image key relative to the prefix>.out``, inference.py's JSON; a failed image fails the job
  (its FailureReason says which).
"""
import csv
import json
import os
import time
from dataclasses import dataclass

from medimg import scoring
from medimg.container import layout

CONTENT_TYPE, ACCEPT = "application/x-image", "application/json"
TERMINAL = ("Completed", "Failed", "Stopped")


class TransformFailed(RuntimeError):
    pass


def split_uri(uri):
    if not str(uri).startswith("s3://"):
        raise ValueError(f"not an S3 URI: {uri!r}; give the images' prefix as s3://<bucket>/<prefix>/")
    bucket, _, key = uri[len("s3://"):].partition("/")
    return bucket, key


@dataclass(frozen=True)
class Batch:
    """A planned transform: the prefix scored, its images (keys relative to it, and sizes), the job's manifest and
    output locations, and its MaxPayloadInMB."""
    input_uri: str
    manifest_uri: str
    output_uri: str
    images: tuple
    sizes: tuple
    max_payload_mb: int
    skipped: tuple = ()

    def container_environment(self):
        """The serving model's limits for requests of up to MaxPayloadInMB (and the transform's timeout)."""
        return scoring.container_environment(self.max_payload_mb * scoring.MB, scoring.TRANSFORM_TIMEOUT_SECONDS)


def image_objects(s3, input_uri):
    """``([(key relative to the prefix, size), ...], [skipped relative keys])`` under ``input_uri``: images by
    train.py's extensions (code/layout.py), hidden files and the rest skipped."""
    bucket, prefix = split_uri(input_uri.rstrip("/") + "/")
    found, skipped = [], []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            rel = obj["Key"][len(prefix):]
            if not rel or rel.endswith("/"):
                continue
            hidden = any(part.startswith(".") for part in rel.split("/"))
            if not hidden and layout.is_image_file(rel.rsplit("/", 1)[-1]):
                found.append((rel, obj["Size"]))
            else:
                skipped.append(rel)
    return sorted(found), sorted(skipped)


def choose_max_payload(images, max_payload_mb=None, input_uri=""):
    """MaxPayloadInMB for ``[(relative key, size), ...]``: ``max_payload_mb`` when every image fits it, else a
    PayloadTooLarge line; by default the whole MB above the largest image, between 6 and 100 (SageMaker's default
    and limit)."""
    limit = scoring.TRANSFORM_MAX_PAYLOAD_MB
    if max_payload_mb is not None:
        asked, max_payload_mb = max_payload_mb, scoring.whole_number(max_payload_mb)
        if max_payload_mb is None or not 1 <= max_payload_mb <= limit:
            raise ValueError(f"max_payload_mb must be a whole number of MB from 1 to {limit} (SageMaker's "
                             f"MaxPayloadInMB), or None to fit the largest image; got {asked!r}")
    rel, size = max(images, key=lambda item: item[1])
    if max_payload_mb is None:
        needed = -(-size // scoring.MB)
        if needed <= limit:
            return max(scoring.TRANSFORM_DEFAULT_PAYLOAD_MB, needed)
    elif size <= max_payload_mb * scoring.MB:
        return max_payload_mb
    cap = max_payload_mb if max_payload_mb is not None else limit
    others = scoring.paths_that_take(size, but="transform")
    raise scoring.PayloadTooLarge(
        f"{input_uri.rstrip('/')}/{rel} is {scoring.size_text(size)} ({size:,} bytes), above the {cap} MB a batch "
        f"transform request carries (MaxPayloadInMB; SageMaker allows up to {limit}); "
        + (f"raise max_payload_mb to {-(-size // scoring.MB)}" if size <= limit * scoring.MB else
           f"send it to {' or '.join(others)}, or downscale it" if others else "downscale it"))


def plan(s3, input_uri, work_uri, *, max_payload_mb=None, kms_key=None, out=print):
    """List the images under ``input_uri``, check their sizes, and write the job's manifest under ``work_uri``
    (its answers go to ``<work_uri>/output``). ValueError (one line) when there is no image or one is too large."""
    images, skipped = image_objects(s3, input_uri)
    if not images:
        raise ValueError(f"no image under {input_uri} (files ending in {', '.join(layout.IMAGE_EXTENSIONS)}); give "
                         "batch_input the S3 prefix of the images to score")
    payload = choose_max_payload(images, max_payload_mb, input_uri)
    prefix = input_uri.rstrip("/") + "/"
    manifest_uri = f"{work_uri.rstrip('/')}/manifest.json"
    bucket, key = split_uri(manifest_uri)
    extra = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key} if kms_key else {}
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps([{"prefix": prefix}] + [rel for rel, _ in images]).encode(),
                  ContentType="application/json", **extra)
    batch = Batch(input_uri=prefix, manifest_uri=manifest_uri, output_uri=f"{work_uri.rstrip('/')}/output",
                  images=tuple(rel for rel, _ in images), sizes=tuple(size for _, size in images),
                  max_payload_mb=payload, skipped=tuple(skipped))
    largest = max(batch.sizes)
    out(f"{len(images)} images under {prefix} (largest {scoring.size_text(largest)}), one request each as "
        f"{CONTENT_TYPE} (the endpoint decides each file's format from its bytes); MaxPayloadInMB {payload}")
    if skipped:
        out(f"not images, not sent: {', '.join(skipped[:5])}{' ...' if len(skipped) > 5 else ''} ({len(skipped)})")
    return batch


def wait(sm, job_name, *, poll=30, out=print):
    """Wait for the transform job to end; its description when Completed, else TransformFailed with its
    FailureReason."""
    last = None
    while True:
        desc = sm.describe_transform_job(TransformJobName=job_name)
        status = desc["TransformJobStatus"]
        if status != last:
            out(f"{job_name}: {status}")
            last = status
        if status in TERMINAL:
            break
        time.sleep(poll)
    if status != "Completed":
        reason = (desc.get("FailureReason") or "").strip() or "SageMaker gave no reason"
        raise TransformFailed(f"transform job {job_name} {status.lower()}: {reason}")
    return desc


def _outputs(s3, output_uri):
    bucket, prefix = split_uri(output_uri.rstrip("/") + "/")
    found = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            if obj["Key"].endswith(".out"):
                found[obj["Key"][len(prefix):-len(".out")]] = obj["Key"]
    return bucket, found


def output_key(outputs, rel):
    """The ``.out`` of image ``rel``: ``<rel>.out``, or one whose path ends with it (an extra leading folder)."""
    if rel in outputs:
        return outputs[rel]
    matches = [key for name, key in outputs.items() if name.endswith("/" + rel)]
    return matches[0] if len(matches) == 1 else None


def collect(s3, batch):
    """One row per image of ``batch``: its S3 key, the label at the operating point (``label``; multi-label: the
    findings at their thresholds, "; "-separated, empty for none) and a probability per class or finding
    (``p_<name>``). TransformFailed when an image has no answer."""
    import pandas as pd

    bucket, outputs = _outputs(s3, batch.output_uri)
    missing = [rel for rel in batch.images if output_key(outputs, rel) is None]
    if missing:
        raise TransformFailed(f"{len(missing)} of {len(batch.images)} images have no answer under "
                              f"{batch.output_uri}/ (first: {missing[0]}.out); the job did not score them")
    _, input_key = split_uri(batch.input_uri)
    rows = []
    for rel in batch.images:
        answer = json.loads(s3.get_object(Bucket=bucket, Key=output_key(outputs, rel))["Body"].read())
        prediction = answer["predictions"][0]
        label = "; ".join(prediction["findings"]) if "findings" in prediction else prediction["label"]
        row = {"s3_key": input_key + rel, "label": label}
        row.update({f"p_{name}": float(p) for name, p in prediction["probabilities"].items()})
        rows.append(row)
    return pd.DataFrame(rows)


def write_csv(table, path):
    """predictions.csv, written whole or not at all."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    table.to_csv(tmp, index=False, quoting=csv.QUOTE_MINIMAL)
    os.replace(tmp, path)
    return path


def against_labels(table, batch, metrics, split="test", *, channel_uri=None):
    """The transform's rows set against train.py's own predictions of ``split`` (metrics.json): the true label,
    whether the answer is it (``right``), and how far the probabilities are from train.py's. Only when the batch scored that split's channel (``channel_uri``:
    image names repeat across channels, so names alone would pair different images); else None."""
    import numpy as np

    saved = metrics.get(f"{split}_predictions")
    if not saved or not channel_uri or batch.input_uri != channel_uri.rstrip("/") + "/":
        return None
    _, input_key = split_uri(batch.input_uri)
    index = {name: i for i, name in enumerate(saved["images"])}
    pairs = [(row, index[key[len(input_key):]]) for row, key in enumerate(table["s3_key"])
             if key[len(input_key):] in index]
    if not pairs:
        return None
    classes, labels = list(metrics["classes"]), np.asarray(saved["labels"])
    joined = table.iloc[[row for row, _ in pairs]].reset_index(drop=True)
    joined.insert(1, "image", [saved["images"][i] for _, i in pairs])
    if labels.ndim == 1:
        joined.insert(2, "true", [classes[int(labels[i])] for _, i in pairs])
    else:
        joined.insert(2, "true", ["; ".join(c for c, v in zip(classes, labels[i]) if v) for _, i in pairs])
    joined.insert(3, "right", joined["label"].fillna("") == joined["true"])
    joined.attrs["multilabel"] = labels.ndim == 2
    train_py = np.asarray(saved["probabilities"], dtype=np.float64)[[i for _, i in pairs]]
    served = joined[[f"p_{c}" for c in classes]].to_numpy(dtype=np.float64)
    joined["max_diff_vs_train_py"] = np.abs(served - train_py).max(axis=1)
    return joined


def agreement(compared):
    """One line: how many answers are the true label (multi-label: the true set of findings), and how far the
    probabilities are from train.py's own."""
    right = int(compared["right"].sum())
    return (f"{right} of {len(compared)} answers at the operating point are the true "
            f"{'findings' if compared.attrs.get('multilabel') else 'label'} ({right / len(compared):.1%}); "
            "probabilities within "
            f"{compared['max_diff_vs_train_py'].max():.1e} of train.py's own {len(compared)} test predictions")
