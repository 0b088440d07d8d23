"""train.py's hyperparameters as its parser gives them, for unit tests of code/ functions that take ``args``."""
import hyperparameters


def args_with(**overrides):
    """The defaults of code/hyperparameters.py (no argv, no SM_* environment), with ``overrides`` set."""
    args = hyperparameters.parse_args([], environ={})
    for key, value in overrides.items():
        setattr(args, key, value)
    return args
