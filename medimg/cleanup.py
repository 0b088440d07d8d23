"""Cleaning up what the notebook created (boto3 clients in, plain text out).

- ``delete_endpoint_resources``: delete an endpoint, its endpoint config and model; idempotent.
- ``stop_warm_pool``: end a training job's warm pool now instead of at the end of its keep-alive period.
- ``stop_transform_job``: stop a batch transform job that is still running (its model is deleted as an
  endpoint's is; its answers, like the asynchronous endpoints' requests and answers, stay in S3 with the data).
- ``ResourceLog``: the names of what the notebook created, in a small JSON file, so that clean-up works
  after a kernel restart or a failed cell.
"""
import json
import os


# ==================================================================================================
# Clean-up
# ==================================================================================================
def _is_missing(exc):
    """SageMaker answers ValidationException "Could not find ..." (or ResourceNotFound) for missing resources."""
    error = getattr(exc, "response", {}).get("Error", {})
    message = error.get("Message", "")
    return error.get("Code") in ("ResourceNotFound", "ResourceNotFoundException") or (
        error.get("Code") == "ValidationException" and ("Could not find" in message or "does not exist" in message))


def _delete(what, name, call, out):
    if not name:
        return False
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - only "it is not there" is expected
        if _is_missing(exc):
            out(f"{what} {name}: already gone")
            return False
        raise
    out(f"{what} {name}: deleted")
    return True


def delete_endpoint_resources(sm, *, endpoint_name=None, endpoint_config_name=None, model_name=None, out=print):
    """Delete an endpoint, its endpoint config and its model; each step skips what is already gone.
    The endpoint config and model names are looked up from the endpoint when it still exists."""
    if endpoint_name:
        try:
            config = sm.describe_endpoint(EndpointName=endpoint_name)["EndpointConfigName"]
            endpoint_config_name = endpoint_config_name or config
        except Exception as exc:  # noqa: BLE001
            if not _is_missing(exc):
                raise
    if endpoint_config_name and not model_name:
        try:
            variants = sm.describe_endpoint_config(EndpointConfigName=endpoint_config_name)["ProductionVariants"]
            model_name = variants[0]["ModelName"] if variants else None
        except Exception as exc:  # noqa: BLE001
            if not _is_missing(exc):
                raise
    return {
        "endpoint": _delete("endpoint", endpoint_name, lambda: sm.delete_endpoint(EndpointName=endpoint_name), out),
        "endpoint_config": _delete("endpoint config", endpoint_config_name, lambda: sm.delete_endpoint_config(
            EndpointConfigName=endpoint_config_name), out),
        "model": _delete("model", model_name, lambda: sm.delete_model(ModelName=model_name), out),
    }


def stop_warm_pool(sm, job_name, out=print):
    """End the job's warm pool now (KeepAlivePeriodInSeconds=0), when it has one that is still Available."""
    try:
        desc = sm.describe_training_job(TrainingJobName=job_name)
    except Exception as exc:  # noqa: BLE001
        if _is_missing(exc):
            out(f"training job {job_name}: not found, no warm pool to stop")
            return False
        raise
    status = (desc.get("WarmPoolStatus") or {}).get("Status")
    if status != "Available":
        out(f"training job {job_name}: no warm pool to stop (warm pool status: {status or 'none'})")
        return False
    sm.update_training_job(TrainingJobName=job_name, ResourceConfig={"KeepAlivePeriodInSeconds": 0})
    out(f"training job {job_name}: warm pool asked to stop (KeepAlivePeriodInSeconds=0)")
    return True


def stop_transform_job(sm, job_name, out=print):
    """Stop the transform job when it is still InProgress; say how it ended otherwise."""
    try:
        status = sm.describe_transform_job(TransformJobName=job_name)["TransformJobStatus"]
    except Exception as exc:  # noqa: BLE001
        if _is_missing(exc):
            out(f"transform job {job_name}: not found")
            return False
        raise
    if status != "InProgress":
        out(f"transform job {job_name}: {status}, nothing to stop")
        return False
    sm.stop_transform_job(TransformJobName=job_name)
    out(f"transform job {job_name}: asked to stop")
    return True


class ResourceLog:
    """``{"training_jobs": [...], "tuning_jobs": [...], "endpoints": [{"endpoint", "endpoint_config", "model"}],
    "transform_jobs": [{"job", "model"}]}``
    in a JSON file, written before each resource is created so that clean-up finds even a half-created one."""

    def __init__(self, path):
        self.path = path

    def read(self):
        try:
            with open(self.path, encoding="utf-8") as fh:
                return json.load(fh)
        except (OSError, ValueError):
            return {"training_jobs": [], "tuning_jobs": [], "endpoints": []}

    def _write(self, data):
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1)
        os.replace(tmp, self.path)

    def add(self, kind, entry):
        data = self.read()
        if entry not in data.setdefault(kind, []):
            data[kind].append(entry)
        self._write(data)

    def remove(self, kind, entry):
        data = self.read()
        data[kind] = [e for e in data.get(kind, []) if e != entry]
        self._write(data)
