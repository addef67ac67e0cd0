"""clipforge: train, use, search with and probe CLIP-style image-text models, offline on a CPU."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("clipforge")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+src"

from clipforge.checkpoint import load, save
from clipforge.eval.zeroshot import classify, zero_shot_classifier
from clipforge.models import (
    CLIP,
    CLIPOutput,
    ModelConfig,
    create_model,
    get_model_config,
    list_models,
    register_model,
)
from clipforge.tokenizer import tokenize

__all__ = [
    "CLIP",
    "CLIPOutput",
    "ModelConfig",
    "__version__",
    "classify",
    "create_model",
    "get_model_config",
    "list_models",
    "load",
    "register_model",
    "save",
    "tokenize",
    "zero_shot_classifier",
]
