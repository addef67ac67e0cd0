"""Model architectures, configs and the registry."""

from clipforge.models.clip import CLIP, CLIPOutput
from clipforge.models.config import ModelConfig
from clipforge.models.registry import create_model, get_model_config, list_models, register_model

__all__ = [
    "CLIP",
    "CLIPOutput",
    "ModelConfig",
    "create_model",
    "get_model_config",
    "list_models",
    "register_model",
]
