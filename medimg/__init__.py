"""The client side of the package: everything that runs in the notebook, on a laptop or in the tests, and never
ships to SageMaker (``code/`` is what ships).

    data_folders  local data folders: list, count, sample, the smoke-test subset
    s3_data       upload a data folder to S3 once per content (resumable); download a prefix safely
    progress      progress of long client work: a tqdm bar at a terminal or in a notebook, plain lines in a log
    container     code/'s contract modules (data layout, log lines), loaded from the files that ship
    job           one description of a training job (JobSpec, TuningSpec): every rule, both SDK majors
    sdk           which SageMaker Python SDK major runs (v2 or v3), and its builder
    sdk_v2        the JobSpec as a sagemaker.pytorch Estimator, tuner and PyTorchModel (SDK v2)
    sdk_v3        the JobSpec as a ModelTrainer, v3 tuner and sagemaker-core endpoint (SDK v3)
    tracking      MLflow: one run per training job from its description and metrics.json; tuning trials as child runs
    registry      the Model Registry, SDK-free: model quality statistics JSON, groups, approval, deployable or not
    pipeline      the retrain-and-register Pipeline's condition, parameters and step names; following an execution
    mlops_v2      SDK v2: register a model, deploy an approved package, build and start the Pipeline
    mlops_v3      SDK v3: the same functions (ModelBuilder.register, sagemaker-core, sagemaker.mlops.workflow)
    monitor       follow a job's status and log (headline lines), its CloudWatch metrics, a tuning job
    cleanup       delete endpoints and their configs and models, stop warm pools and transform jobs; the resource log
    scoring       the serving paths (real-time, serverless, async): their settings and SageMaker's size limits
    transform     batch transform: the images under an S3 prefix, MaxPayloadInMB, the answers as predictions.csv
    heatmaps      Grad-CAM heat maps of a trained model, computed in the model's own process
    dicom         DICOM files to manifest channels of PNGs (prepare_data --dicom)
    artifacts     download and safely extract model.tar.gz / output.tar.gz; metrics tables; the local model
    serving       a model's own code/inference.py served in a separate process, as the inference container does
    plots         the notebook's figures
    prepare_data  MedMNIST .npz (or a download) -> channels          (also: scripts/prepare_data.py)
    local_train   train.py on a fake /opt/ml through the real launcher, v2 toolkit or v3 drivers (also: scripts/local_train.py)
    opt_ml        one host's fake /opt/ml (config files, channels, output folders), for local_train and the tests
    launch_v2     local_train --launcher v2: the sagemaker-training toolkit's /opt/ml, command and environment
    launch_v3     local_train --launcher v3: SDK v3's drivers staged and redirected, command and environment
    processes     local_train's processes: one per host, logs, the process tree, signals passed on
    show_metrics  headline figures of a metrics.json                   (also: scripts/show_metrics.py)

Install it with ``pip install -e .`` from the repository root (``make install`` does): it reads ``code/`` from
the checkout it lives in.
"""
