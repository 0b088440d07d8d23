"""The errors a user can fix, and the one line SageMaker shows for a failed job.

A ``TrainingError``'s message is that line: what is wrong and what to do. ``write_failure`` puts it in
``<SM_OUTPUT_DIR>/failure``, whose first 1024 characters become the job's FailureReason (the toolkit and the
SDK v3 drivers keep a failure file the script wrote itself).
"""
import logging
import os

from utils import atomic_write_text, one_line

logger = logging.getLogger("train")


class TrainingError(Exception):
    """A problem the user can fix. The message says what is wrong and what to do, on one line."""


class ConfigError(TrainingError):
    """Invalid hyperparameters, paths or channels."""


class DataError(TrainingError):
    """Missing, malformed or inconsistent data or labels."""


class BadImageError(DataError):
    """One image that cannot be used (corrupt, truncated, too large)."""


class ImageTooLargeError(BadImageError):
    """An image with more pixels than allowed (a decompression bomb, or simply too large)."""


class NonFiniteError(TrainingError):
    """A loss, weight or prediction that is NaN or infinite: the model is broken and is not saved."""


class Stopped(Exception):
    """Raised after a SIGTERM once everything is saved; its message is the failure line."""


def write_failure(output_dir, message):
    """Write the one-line failure reason where the SageMaker toolkit (and the job's FailureReason) reads it."""
    try:
        os.makedirs(output_dir, exist_ok=True)
        atomic_write_text(os.path.join(output_dir, "failure"), one_line(message) + "\n")
    except OSError as exc:  # never let reporting hide the original error
        logger.error("could not write the failure file in %s: %s", output_dir, exc)
