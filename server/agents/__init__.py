"""Agents and teams as step executors, the tools they call, and the model clients they talk to."""

from .agent import Agent, AgentError
from .models import Message, Model, ModelError, OpenAIChat, ToolCall, ToolModel
from .offline import OfflineModel, OfflineToolModel, default_model
from .team import Team, TeamMode
from .tools import Tool, ToolCallInfo, Toolkit, current_tool_call, tool

__all__ = [
    "Agent",
    "AgentError",
    "Message",
    "Model",
    "ModelError",
    "OfflineModel",
    "OfflineToolModel",
    "OpenAIChat",
    "Team",
    "TeamMode",
    "Tool",
    "ToolCall",
    "ToolCallInfo",
    "ToolModel",
    "Toolkit",
    "current_tool_call",
    "default_model",
    "tool",
]
