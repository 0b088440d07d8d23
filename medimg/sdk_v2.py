"""SageMaker Python SDK v2 (``sagemaker`` < 3): the ``sagemaker.pytorch`` Estimator, made to deploy as is.

The training images go to PyTorch 2.8; the inference images stop at 2.6 (SAGEMAKER_CONTRACT.md, "Versions"). So
``PyTorch(framework_version="2.8.0").deploy()`` fails in the SDK itself ("Unsupported pytorch version: 2.8.0"
for the inference image). ``Estimator`` is ``sagemaker.pytorch.PyTorch`` whose ``create_model`` (what
``deploy()`` calls) serves the trained model on the newest inference image not newer than the training one, with
the SDK's own defaults otherwise: ``train.py`` as the entry point (it exports inference.py's handlers) and
``PyTorchPredictor``'s numpy serializer/deserializer (inference.py answers application/x-npy).
"""
from sagemaker.pytorch import PyTorch

INFERENCE_VERSIONS = ("2.6.0",)  # PyTorch inference images for Python 3.12, newest first


def inference_version(training_version):
    """The inference image version for a model trained on ``training_version``: the newest one not newer."""
    def key(v):
        return tuple(int(p) for p in v.split("."))

    for version in INFERENCE_VERSIONS:
        if key(version) <= key(training_version):
            return version
    return training_version


class Estimator(PyTorch):
    """``sagemaker.pytorch.PyTorch`` whose ``deploy()`` and ``create_model()`` work for a 2.7/2.8 training job."""

    def create_model(self, *args, **kwargs):
        model = super().create_model(*args, **kwargs)
        model.framework_version = inference_version(self.framework_version)
        return model
