"""Fan-out: committed events to subscribers, bounded per subscriber, refilled from the store."""

from .broker import Broker, Subscription

__all__ = ["Broker", "Subscription"]
