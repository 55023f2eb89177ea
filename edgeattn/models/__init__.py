"""Model zoo. ``create_model(name)`` builds any registered network or attention block."""

from edgeattn.models.registry import create_model, list_models, model_info, register_model

__all__ = ["create_model", "list_models", "model_info", "register_model"]
