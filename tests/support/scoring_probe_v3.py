"""medimg.sdk_v3's scoring against the emulator, for tests/system/test_scoring_paths.py (run with .venv-sdk3's
python; not collected by pytest): a serverless endpoint, an asynchronous one and a batch transform of one model.

    .venv-sdk3/bin/python tests/system/scoring_probe_v3.py < params.json    # AWS_ENDPOINT_URL: the emulator

``{"bucket", "model_data", "spec": JobSpec kwargs, "archive": S3 prefix of images, "work": S3 prefix,
"small", "big", "corrupt": image file paths}`` in; out: each endpoint's name, answers and refusals (one line
each), and the transform's job name and table.
"""
import json
import sys


def refusal(call):
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - the refusal is the answer
        return f"{type(exc).__name__}: {exc}"
    return None


def main(params):
    import boto3

    from medimg import scoring, sdk_v3, transform
    from medimg.job import JobSpec

    session = sdk_v3.make_session(boto3.Session(region_name="us-east-1"), default_bucket=params["bucket"])
    s3 = session.boto_session.client("s3")
    sm = session.boto_session.client("sagemaker")
    spec = JobSpec(**params["spec"])
    small, big, corrupt = (open(params[k], "rb").read() for k in ("small", "big", "corrupt"))
    out = {}

    serving = scoring.Serving("serverless", 3072, 7)
    endpoint = sdk_v3.deploy(spec, params["model_data"], session, endpoint_name="v3-serverless", serving=serving, poll=1)
    out["serverless"] = {"answer": sdk_v3.invoke(endpoint, small, endpoint_type="serverless"),
                         "refused": refusal(lambda: sdk_v3.invoke(endpoint, big, endpoint_type="serverless")),
                         "model": sm.describe_model(ModelName="v3-serverless")["PrimaryContainer"],
                         "deleted": sdk_v3.delete(session, "v3-serverless", out=lambda line: None)}

    serving = scoring.Serving("async", async_path=f"{params['work']}/async")
    endpoint = sdk_v3.deploy(spec, params["model_data"], session, endpoint_name="v3-async", serving=serving, poll=1)
    pending = [sdk_v3.invoke_async(endpoint, scoring.upload_request(s3, body, f"{serving.input_path}/{n}.png"))
               for n, body in enumerate((big, small))]
    failing = sdk_v3.invoke_async(endpoint, scoring.upload_request(s3, corrupt, f"{serving.input_path}/bad.png"))
    out["async"] = {"answers": [scoring.wait_for_answer(s3, r, poll=1, timeout=120) for r in pending],
                    "requests": [r.__dict__ for r in pending],
                    "failed": refusal(lambda: scoring.wait_for_answer(s3, failing, poll=1, timeout=120)),
                    "realtime_refused": refusal(lambda: sdk_v3.invoke(endpoint, big)),
                    "model": sm.describe_model(ModelName="v3-async")["PrimaryContainer"],
                    "deleted": sdk_v3.delete(session, "v3-async", out=lambda line: None)}

    batch = transform.plan(s3, params["archive"], f"{params['work']}/batch/v3-transform", out=lambda m: None)
    _, name = sdk_v3.transform(spec, params["model_data"], session, batch, job_name="v3-transform")
    transform.wait(sm, name, poll=1, out=lambda m: None)
    out["transform"] = {"job": name, "max_payload_mb": batch.max_payload_mb,
                        "rows": transform.collect(s3, batch).to_dict(orient="records"),
                        "model": sm.describe_model(ModelName=name)["PrimaryContainer"]}
    return out


if __name__ == "__main__":
    json.dump(main(json.load(sys.stdin)), sys.stdout, default=str)
