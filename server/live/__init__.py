"""Fan-out: committed events to subscribers, bounded per subscriber, refilled from the store."""

from .broker import Broker, ClientShare, Subscription
from .frames import Frame, Framed, WriteNow
from .runs_feed import RunsFeed, RunsWatch

__all__ = ["Broker", "ClientShare", "Frame", "Framed", "RunsFeed", "RunsWatch", "Subscription", "WriteNow"]
