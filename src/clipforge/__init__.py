"""clipforge: train, use, search with and probe CLIP-style image-text models, offline on a CPU."""

from clipforge.checkpoint import load, load_folder, save
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
from clipforge.version import __version__

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
    "load_folder",
    "register_model",
    "save",
    "tokenize",
    "zero_shot_classifier",
]
