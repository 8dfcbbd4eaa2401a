"""Agents and teams as step executors, and the model clients they talk to."""

from .agent import Agent, Team
from .models import Message, Model, ModelError, OfflineModel, OpenAIChat, default_model

__all__ = ["Agent", "Message", "Model", "ModelError", "OfflineModel", "OpenAIChat", "Team", "default_model"]
