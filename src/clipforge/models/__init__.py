"""Model architectures, configs, the registry, and the typed contract every model class implements."""

from clipforge.models.base import CLIPOutput, ContrastiveModel, Model, TowerModel
from clipforge.models.clip import CLIP
from clipforge.models.config import ModelConfig
from clipforge.models.registry import create_model, get_model_config, list_models, register_model

__all__ = [
    "CLIP",
    "CLIPOutput",
    "ContrastiveModel",
    "Model",
    "ModelConfig",
    "TowerModel",
    "create_model",
    "get_model_config",
    "list_models",
    "register_model",
]
