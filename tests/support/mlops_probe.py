"""The Model Registry and Pipelines of whichever SDK major this python has (medimg.sdk.mlops), against the emulator
(AWS_ENDPOINT_URL): run with .venv's python (SDK v2) or .venv-sdk3's (SDK v3), never collected by pytest.

    python tests/support/mlops_probe.py result.json < request.json

Request: ``{"bucket", "spec": JobSpec kwargs, "pipeline_name", "condition", "group", "approval_status",
"executions": [start parameters, ...]}``. Every execution is started first (``run_pipeline``), then each is
followed to its end (``pipeline.wait_for_execution``). Out: ``{"sdk", "executions": [{"arn", "status",
"failure_reason", "model_package_arn", "training_job", "steps", "log"}], "definition"}``.
"""
import json
import sys


def main(request):
    import boto3

    from medimg import pipeline, sdk
    from medimg.job import JobSpec

    path = sdk.detect()
    sdk.quiet(path)
    builder, mlops = sdk.module(path), sdk.mlops(path)
    session = builder.make_session(boto3.Session(region_name="us-east-1"), default_bucket=request["bucket"])
    sm = session.boto_session.client("sagemaker")
    spec = JobSpec(**request["spec"])
    arns = []
    for parameters in request["executions"]:
        pipe, arn = mlops.run_pipeline(spec, session, pipeline_name=request["pipeline_name"],
                                       condition=request["condition"], model_package_group=request["group"],
                                       approval_status=request["approval_status"], parameters=parameters)
        arns.append(arn)
    out = {"sdk": path, "executions": [], "definition": json.loads(pipe.definition())}
    for arn in arns:
        lines = []
        result = pipeline.wait_for_execution(sm, arn, poll=1, out=lines.append)
        out["executions"].append(dict(result, arn=arn, log=lines))
    return out


if __name__ == "__main__":  # the result to a file: the SDKs print to stdout themselves
    result = main(json.load(sys.stdin))
    with open(sys.argv[1], "w", encoding="utf-8") as fh:
        json.dump(result, fh, default=str)
