"""Fan-out: committed events to subscribers, bounded per subscriber, refilled from the store."""

from .broker import Broker, ClientShare, Subscription
from .runs_feed import RunsFeed, RunsWatch

__all__ = ["Broker", "ClientShare", "RunsFeed", "RunsWatch", "Subscription"]
