"""medimg.scoring and medimg.transform without a server: the kinds of endpoint and SageMaker's limits on them, the
size each path takes (refused in one line naming the paths that take it), the container limits per deployment,
batch transform planning (images only, MaxPayloadInMB), predictions.csv from the answers, the comparison with
train.py's own predictions, waiting for asynchronous answers and transform jobs, clean-up; and the two SDK
builders' scoring functions, the same names and parameters."""
import inspect
import json

import numpy as np
import pytest

from medimg import cleanup, scoring, sdk_v2, sdk_v3, transform
from medimg.scoring import MB, PayloadTooLarge, Serving

BUCKET = "bkt"  # conftest's moto S3 fixture


# ---------------------------------------------------------------- the kinds of endpoint
def test_serving_defaults_to_a_real_time_endpoint_with_nothing_to_change_in_the_container():
    serving = Serving()
    assert (serving.endpoint_type, serving.max_request_bytes) == ("realtime", 6 * MB)
    assert serving.container_environment() == {} and serving.output_path is None
    assert Serving("serverless").container_environment() == {}  # SageMaker refuses > 4 MB before the container


@pytest.mark.parametrize("memory", [1024, 2048, 6144])
@pytest.mark.parametrize("concurrency", [1, 5, 200])
def test_serverless_within_sagemakers_limits(memory, concurrency):
    serving = Serving("serverless", memory, concurrency)
    assert "serverless: " in serving.describe("ml.m5.large") and "no instance" in serving.describe("ml.m5.large")


@pytest.mark.parametrize("kwargs, words", [
    ({"endpoint_type": "batch"}, "endpoint_type must be one of realtime, serverless, async"),
    ({"endpoint_type": "serverless", "memory_mb": 1000}, "serverless memory must be one of 1024, 2048"),
    ({"endpoint_type": "serverless", "memory_mb": 8192}, "(1 GB steps, SageMaker's limits), got 8192"),
    ({"endpoint_type": "serverless", "max_concurrency": 0}, "from 1 to 200"),
    ({"endpoint_type": "serverless", "max_concurrency": 201}, "got 201"),
    ({"endpoint_type": "serverless", "max_concurrency": 2.5}, "whole number"),
    ({"endpoint_type": "serverless", "max_concurrency": True}, "whole number"),
    ({"endpoint_type": "serverless", "memory_mb": "2048"}, "got '2048'"),
    ({"endpoint_type": "async"}, "needs an S3 prefix"),
    ({"endpoint_type": "async", "async_path": "/tmp/answers"}, "got '/tmp/answers'"),
])
def test_settings_outside_sagemakers_limits_are_one_line(kwargs, words):
    with pytest.raises(ValueError) as err:
        Serving(**kwargs)
    assert words in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("written, kind", [("Serverless", "serverless"), (" ASYNC ", "async"),
                                           ("real-time", "realtime"), ("Realtime", "realtime")])
def test_endpoint_types_and_numbers_as_users_write_them(written, kind):
    serving = Serving(written, 3072.0, 7.0, async_path="s3://b/a")
    assert serving.endpoint_type == kind
    if kind == "serverless":
        assert (serving.memory_mb, serving.max_concurrency) == (3072, 7)
        assert type(serving.memory_mb) is int and type(serving.max_concurrency) is int


def test_async_paths_and_container_limits_for_a_gigabyte():
    serving = Serving("async", async_path="s3://b/p/async/")
    assert (serving.input_path, serving.output_path, serving.failure_path) == (
        "s3://b/p/async/inputs", "s3://b/p/async/outputs", "s3://b/p/async/failures")
    assert serving.container_environment() == {
        "INFERENCE_MAX_REQUEST_BYTES": str(1024 * MB), "TS_MAX_REQUEST_SIZE": str(1024 * MB),
        "SAGEMAKER_MODEL_SERVER_TIMEOUT": "900"}


def test_under_torchserves_default_only_inference_pys_limit_is_set():
    assert scoring.container_environment(6 * MB) == {"INFERENCE_MAX_REQUEST_BYTES": str(6 * MB)}
    assert scoring.container_environment(7 * MB)["TS_MAX_REQUEST_SIZE"] == str(7 * MB)


@pytest.mark.parametrize("security", [{"subnets": ["subnet-1"], "security_group_ids": ["sg-1"]},
                                      {"enable_network_isolation": True}])
def test_serverless_refuses_a_vpc_or_network_isolation_rather_than_dropping_it(security):
    Serving("async", async_path="s3://b/a").check_security(**security)  # instances: fine
    with pytest.raises(ValueError, match="a serverless endpoint cannot run in a VPC or with network isolation"):
        Serving("serverless").check_security(**security)


# ---------------------------------------------------------------- what each path takes
@pytest.mark.parametrize("endpoint_type, size, limit, paths", [
    ("realtime", 8_400_000, "6 MB a real-time endpoint", ["an asynchronous endpoint", "batch transform"]),
    ("realtime", 200 * MB, "6 MB a real-time endpoint", ["an asynchronous endpoint"]),
    ("serverless", 5 * MB, "4 MB a serverless endpoint", ["a real-time endpoint", "an asynchronous endpoint",
                                                          "batch transform"]),
    ("serverless", 8_400_000, "4 MB a serverless endpoint", ["an asynchronous endpoint", "batch transform"]),
    ("async", 1024 * MB + 1, "1 GB an asynchronous endpoint", []),
])
def test_a_request_above_its_path_is_one_line_naming_the_paths_that_take_it(endpoint_type, size, limit, paths):
    with pytest.raises(PayloadTooLarge) as err:
        scoring.check_request(size, endpoint_type, what="chest.png")
    message = str(err.value)
    assert message.startswith(f"chest.png is {scoring.size_text(size)} ({size:,} bytes), above the {limit} takes")
    assert "\n" not in message
    for name in ("a real-time endpoint (", "an asynchronous endpoint (", "batch transform ("):
        assert (name in message) == any(name.startswith(p) for p in paths), (name, message)
    assert message.endswith("downscale it")


@pytest.mark.parametrize("endpoint_type", ["realtime", "serverless", "async"])
def test_a_request_at_its_paths_limit_passes(endpoint_type):
    scoring.check_request(scoring.REQUEST_LIMITS[endpoint_type], endpoint_type)


@pytest.mark.parametrize("builder", [sdk_v2, sdk_v3])
def test_invoke_refuses_before_sending(builder):
    class Unreachable:
        def __getattr__(self, name):
            raise AssertionError("nothing may be sent")

    with pytest.raises(PayloadTooLarge, match="above the 6 MB a real-time endpoint takes"):
        builder.invoke(Unreachable(), b"x" * (6 * MB + 1))
    with pytest.raises(PayloadTooLarge, match="above the 4 MB a serverless endpoint takes"):
        builder.invoke(Unreachable(), b"x" * (4 * MB + 1), endpoint_type="serverless")
    with pytest.raises(ValueError, match="use invoke_async"):
        builder.invoke(Unreachable(), b"x", endpoint_type="async")


def test_both_sdk_builders_have_the_scoring_functions_with_the_same_parameters():
    for name in ("deploy", "invoke", "invoke_async", "transform"):
        v2, v3 = (list(inspect.signature(getattr(m, name)).parameters.values()) for m in (sdk_v2, sdk_v3))
        keyword = {p.name: p.default for p in v2 if p.kind == p.KEYWORD_ONLY}
        assert keyword == {p.name: p.default for p in v3 if p.kind == p.KEYWORD_ONLY}, name
        if name != "deploy":  # deploy's positional names predate this (model_data / model_data_url)
            assert [p.name for p in v2[1:]] == [p.name for p in v3[1:]], name
    assert inspect.signature(sdk_v2.deploy).parameters["serving"].default is None


def test_sdk_v2_serving_keywords():
    assert sdk_v2.serving_kwargs(Serving(), "ml.m5.large") == {"initial_instance_count": 1,
                                                               "instance_type": "ml.m5.large"}
    serverless = sdk_v2.serving_kwargs(Serving("serverless", 3072, 7), "ml.m5.large")
    assert list(serverless) == ["serverless_inference_config"]
    assert serverless["serverless_inference_config"]._to_request_dict() == {"MemorySizeInMB": 3072,
                                                                            "MaxConcurrency": 7}
    kwargs = sdk_v2.serving_kwargs(Serving("async", async_path="s3://b/p/async"), "ml.g4dn.xlarge")
    assert kwargs["instance_type"] == "ml.g4dn.xlarge"
    assert kwargs["async_inference_config"]._to_request_dict()["OutputConfig"] == {
        "S3OutputPath": "s3://b/p/async/outputs", "S3FailurePath": "s3://b/p/async/failures"}
    encrypted = sdk_v2.serving_kwargs(Serving("async", async_path="s3://b/a"), "ml.m5.large", "arn:key/out")
    assert encrypted["async_inference_config"]._to_request_dict()["OutputConfig"]["KmsKeyId"] == "arn:key/out"


# ---------------------------------------------------------------- batch transform
def put(s3, key, size=10, body=None):
    s3.put_object(Bucket=BUCKET, Key=key, Body=body if body is not None else b"\0" * size)


def test_plan_lists_the_images_only_and_writes_the_manifest(s3):
    for key, size in (("d/test/normal/0.png", 100), ("d/test/normal/1.JPG", 200), ("d/test/pneumonia/0.tif", 300),
                      ("d/test/label_dict.json", 5), ("d/test/labels.csv", 5), ("d/test/.ipynb_checkpoints/0.png", 5),
                      ("d/testing/normal/9.png", 5)):
        put(s3, key, size)
    said = []
    batch = transform.plan(s3, f"s3://{BUCKET}/d/test", f"s3://{BUCKET}/p/batch/job", out=said.append)
    assert batch.input_uri == f"s3://{BUCKET}/d/test/"  # not d/testing/
    assert batch.images == ("normal/0.png", "normal/1.JPG", "pneumonia/0.tif") and batch.sizes == (100, 200, 300)
    assert batch.skipped == (".ipynb_checkpoints/0.png", "label_dict.json", "labels.csv")
    assert batch.max_payload_mb == 6 and batch.output_uri == f"s3://{BUCKET}/p/batch/job/output"
    manifest = json.loads(s3.get_object(Bucket=BUCKET, Key="p/batch/job/manifest.json")["Body"].read())
    assert manifest == [{"prefix": f"s3://{BUCKET}/d/test/"}, "normal/0.png", "normal/1.JPG", "pneumonia/0.tif"]
    assert said[0].startswith(f"3 images under s3://{BUCKET}/d/test/ (largest 300 bytes), one request each as "
                              "application/x-image") and said[0].endswith("MaxPayloadInMB 6")
    assert said[1] == "not images, not sent: .ipynb_checkpoints/0.png, label_dict.json, labels.csv (3)"
    assert batch.container_environment() == {"INFERENCE_MAX_REQUEST_BYTES": str(6 * MB),
                                             "SAGEMAKER_MODEL_SERVER_TIMEOUT": "600"}


def test_plan_without_images_says_so(s3):
    put(s3, "d/test/label_dict.json")
    with pytest.raises(ValueError, match=f"no image under s3://{BUCKET}/d/test/ "):
        transform.plan(s3, f"s3://{BUCKET}/d/test/", f"s3://{BUCKET}/p/b", out=lambda m: None)


@pytest.mark.parametrize("largest, asked, payload", [(100, None, 6), (6 * MB, None, 6), (6 * MB + 1, None, 7),
                                                     (8_400_000, None, 9), (100 * MB, None, 100), (100, 1, 1),
                                                     (8_400_000, 20, 20), (8_400_000, 20.0, 20)])
def test_max_payload_fits_the_largest_image(largest, asked, payload):
    assert transform.choose_max_payload([("a.png", 10), ("big.png", largest)], asked) == payload


@pytest.mark.parametrize("largest, asked, words", [
    (8_400_000, 6, "above the 6 MB a batch transform request carries (MaxPayloadInMB; SageMaker allows up to 100); "
                   "raise max_payload_mb to 9"),
    (150 * MB, None, "above the 100 MB a batch transform request carries (MaxPayloadInMB; SageMaker allows up to "
                     "100); send it to an asynchronous endpoint (endpoint_type='async', up to 1 GB), or downscale it"),
    (150 * MB, 20, "above the 20 MB"),
])
def test_an_image_above_max_payload_is_refused_before_any_job(largest, asked, words):
    with pytest.raises(PayloadTooLarge) as err:
        transform.choose_max_payload([("a.png", 10), ("x/big.png", largest)], asked, "s3://b/d/test/")
    assert str(err.value).startswith(f"s3://b/d/test/x/big.png is {scoring.size_text(largest)}")
    assert words in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("asked", [0, 101, 6.5, True, "6"])
def test_max_payload_is_a_whole_number_of_mb_up_to_100(asked):
    with pytest.raises(ValueError, match="max_payload_mb must be a whole number of MB from 1 to 100"):
        transform.choose_max_payload([("a.png", 10)], asked)


def answer(probabilities, label=None, findings=None):
    prediction = {"probabilities": probabilities}
    prediction.update({"label": label} if findings is None else {"findings": findings})
    return json.dumps({"predictions": [prediction]}).encode()


def planned(s3, images):
    for rel in images:
        put(s3, f"d/test/{rel}")
    return transform.plan(s3, f"s3://{BUCKET}/d/test/", f"s3://{BUCKET}/p/batch/j", out=lambda m: None)


def test_collect_gives_one_row_per_image_with_its_key_label_and_probabilities(s3):
    batch = planned(s3, ["normal/0.png", "pneumonia/0.png", "pneumonia/1.png"])
    for rel, p in (("normal/0.png", 0.2), ("pneumonia/0.png", 0.9), ("pneumonia/1.png", 0.4)):
        label = "pneumonia" if p >= 0.5 else "normal"
        put(s3, f"p/batch/j/output/{rel}.out", body=answer({"normal": 1 - p, "pneumonia": p}, label))
    table = transform.collect(s3, batch)
    assert list(table.columns) == ["s3_key", "label", "p_normal", "p_pneumonia"]
    assert list(table["s3_key"]) == ["d/test/normal/0.png", "d/test/pneumonia/0.png", "d/test/pneumonia/1.png"]
    assert list(table["label"]) == ["normal", "pneumonia", "normal"]
    assert np.allclose(table["p_pneumonia"], [0.2, 0.9, 0.4])


def test_collect_reads_findings_and_outputs_under_an_extra_folder(s3):
    batch = planned(s3, ["images/0.png", "images/1.png"])
    put(s3, "p/batch/j/output/test/images/0.png.out",  # the API guide's example puts the input's folder first
        body=answer({"Effusion": 0.8, "Nodule": 0.7}, findings=["Effusion", "Nodule"]))
    put(s3, "p/batch/j/output/images/1.png.out", body=answer({"Effusion": 0.1, "Nodule": 0.2}, findings=[]))
    table = transform.collect(s3, batch)
    assert list(table.columns) == ["s3_key", "label", "p_Effusion", "p_Nodule"]  # the findings at their thresholds
    assert list(table["label"]) == ["Effusion; Nodule", ""]
    metrics = {"classes": ["Effusion", "Nodule"], "test_predictions": {
        "images": ["images/0.png", "images/1.png"], "labels": [[1, 1], [0, 1]], "probabilities": [[0.8, 0.7],
                                                                                                 [0.1, 0.2]]}}
    compared = transform.against_labels(table, batch, metrics, channel_uri=f"s3://{BUCKET}/d/test/")
    assert list(compared["true"]) == ["Effusion; Nodule", "Nodule"] and list(compared["right"]) == [True, False]
    assert transform.agreement(compared).startswith("1 of 2 answers at the operating point are the true findings")


def test_an_image_without_an_answer_is_said_not_dropped(s3):
    batch = planned(s3, ["a.png", "b.png"])
    put(s3, "p/batch/j/output/a.png.out", body=answer({"x": 1.0}, "x"))
    with pytest.raises(transform.TransformFailed, match=r"1 of 2 images have no answer .* \(first: b.png.out\)"):
        transform.collect(s3, batch)


def test_predictions_csv_and_train_pys_predictions_side_by_side(s3, tmp_path):
    batch = planned(s3, ["normal/0.png", "pneumonia/0.png"])
    for rel, p in (("normal/0.png", 0.2), ("pneumonia/0.png", 0.4)):
        put(s3, f"p/batch/j/output/{rel}.out", body=answer({"normal": 1 - p, "pneumonia": p},
                                                          "pneumonia" if p >= 0.3 else "normal"))
    table = transform.collect(s3, batch)
    path = transform.write_csv(table, str(tmp_path / "batch" / "predictions.csv"))
    assert open(path).read().splitlines()[0] == "s3_key,label,p_normal,p_pneumonia"
    metrics = {"classes": ["normal", "pneumonia"], "test_predictions": {
        "images": ["pneumonia/0.png", "normal/0.png"], "labels": [1, 0],
        "probabilities": [[0.6, 0.4 + 2e-7], [0.8, 0.2]]}}
    compared = transform.against_labels(table, batch, metrics, "test", channel_uri=f"s3://{BUCKET}/d/test")
    assert list(compared["right"]) == [True, True]
    assert list(compared["true"]) == ["normal", "pneumonia"] and list(compared["image"]) == ["normal/0.png",
                                                                                              "pneumonia/0.png"]
    assert compared["max_diff_vs_train_py"].max() < 1e-6
    assert transform.agreement(compared).startswith("2 of 2 answers at the operating point are the true label "
                                                    "(100.0%); probabilities within ")
    metrics["test_predictions"]["labels"] = [0, 0]  # pneumonia/0.png is normal after all: answered wrong
    wrong = transform.against_labels(table, batch, metrics, "test", channel_uri=f"s3://{BUCKET}/d/test")
    assert list(wrong["right"]) == [True, False]
    assert transform.agreement(wrong).startswith("1 of 2 answers at the operating point are the true label (50.0%)")
    # the same names in another channel are other images: no pairing by name alone
    assert transform.against_labels(table, batch, metrics, "test", channel_uri=f"s3://{BUCKET}/d/val/") is None
    assert transform.against_labels(table, batch, metrics, "val", channel_uri=f"s3://{BUCKET}/d/test/") is None


class FakeSageMaker:
    def __init__(self, *descriptions):
        self.descriptions, self.stopped = list(descriptions), []

    def describe_transform_job(self, TransformJobName):
        return self.descriptions.pop(0) if len(self.descriptions) > 1 else self.descriptions[0]

    def stop_transform_job(self, TransformJobName):
        self.stopped.append(TransformJobName)


def test_waiting_for_a_transform_job_says_its_states_and_its_failure_reason():
    said = []
    done = transform.wait(FakeSageMaker({"TransformJobStatus": "InProgress"}, {"TransformJobStatus": "Completed"}),
                          "j", poll=0, out=said.append)
    assert done["TransformJobStatus"] == "Completed" and said == ["j: InProgress", "j: Completed"]
    with pytest.raises(transform.TransformFailed) as err:
        transform.wait(FakeSageMaker({"TransformJobStatus": "Failed", "FailureReason": "ClientError: b/k: 413"}),
                       "j", poll=0, out=lambda m: None)
    assert str(err.value) == "transform job j failed: ClientError: b/k: 413"


def test_clean_up_stops_a_running_transform_job_only():
    said = []
    running = FakeSageMaker({"TransformJobStatus": "InProgress"})
    assert cleanup.stop_transform_job(running, "j", out=said.append) and running.stopped == ["j"]
    done = FakeSageMaker({"TransformJobStatus": "Completed"})
    assert not cleanup.stop_transform_job(done, "k", out=said.append) and done.stopped == []
    assert said == ["transform job j: asked to stop", "transform job k: Completed, nothing to stop"]


# ---------------------------------------------------------------- asynchronous answers
def test_an_asynchronous_answer_is_read_when_it_is_written(s3):
    request = scoring.AsyncRequest("id1", f"s3://{BUCKET}/a/inputs/x.png", f"s3://{BUCKET}/a/outputs/id1.out",
                                   f"s3://{BUCKET}/a/failures/id1-error.out")
    assert scoring.upload_request(s3, b"png", request.input_location) == request.input_location
    assert s3.get_object(Bucket=BUCKET, Key="a/inputs/x.png")["ContentType"] == "application/x-image"
    with pytest.raises(scoring.AsyncInferenceFailed, match="no answer to asynchronous request id1 after 0 s"):
        scoring.wait_for_answer(s3, request, poll=0, timeout=0)
    put(s3, "a/outputs/id1.out", body=answer({"normal": 1.0}, "normal"))
    assert scoring.wait_for_answer(s3, request, poll=0)["predictions"][0]["label"] == "normal"


def test_an_asynchronous_failure_is_one_line_with_the_endpoints_message(s3):
    request = scoring.AsyncRequest("id2", "s3://x/in", f"s3://{BUCKET}/a/outputs/id2.out",
                                   f"s3://{BUCKET}/a/failures/id2-error.out")
    put(s3, "a/failures/id2-error.out", body=b"the request body is not a readable\nPNG image")
    with pytest.raises(scoring.AsyncInferenceFailed) as err:
        scoring.wait_for_answer(s3, request, poll=0, timeout=5)
    assert str(err.value) == ("asynchronous request id2 failed: the request body is not a readable PNG image "
                              f"(s3://{BUCKET}/a/failures/id2-error.out)")
