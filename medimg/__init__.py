"""The client side of the package: everything that runs in the notebook, on a laptop or in the tests, and never
ships to SageMaker (``code/`` is what ships).

    channels      local data folders: list, sample, subset, upload to S3 once per content
    container     code/'s contract modules (data layout, log lines), loaded from the files that ship
    job_config    the training job's settings: metric definitions, Estimator and tuner arguments
    jobs          follow a job's status and log; clean up endpoints and warm pools
    artifacts     download and safely extract model.tar.gz / output.tar.gz; metrics tables; the local model
    serving       a model's own code/inference.py served in a separate process, as the inference container does
    plots         the notebook's figures
    prepare_data  MedMNIST .npz (or a download) -> channels          (also: scripts/prepare_data.py)
    local_train   train.py on a fake /opt/ml through the real launcher (also: scripts/local_train.py)
    show_metrics  headline figures of a metrics.json                   (also: scripts/show_metrics.py)

Install it with ``pip install -e .`` from the repository root (``make install`` does): it reads ``code/`` from
the checkout it lives in.
"""
