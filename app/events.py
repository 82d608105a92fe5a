"""Live events for open pages: new windows, model versions and alarms, as server-sent events.

Producers (request threads storing windows, the update worker, alarm detection) publish from any
thread; each open ``GET /v1/events`` stream is an asyncio queue on the server's loop, filled with
``call_soon_threadsafe``. A page that falls behind by ``QUEUE_SIZE`` events loses the oldest-first
overflow and is told so (``event: overflow``); it then reloads what it shows from the API.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

QUEUE_SIZE = 1000
KEEPALIVE_S = 15.0


@dataclass(eq=False)
class Subscription:
    loop: asyncio.AbstractEventLoop
    modality: str | None
    patient_id: str | None
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))
    overflowed: bool = False

    def wants(self, event: dict) -> bool:
        return (self.modality is None or event.get("modality") == self.modality) and (
            self.patient_id is None or event.get("patient_id") == self.patient_id
        )

    def offer(self, item: tuple[str, dict] | None) -> None:
        """On the loop's thread."""
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.overflowed = True


class EventHub:
    def __init__(self) -> None:
        self._subscriptions: set[Subscription] = set()
        self._lock = threading.Lock()
        self.closed = threading.Event()

    def subscribe(self, modality: str | None, patient_id: str | None) -> Subscription:
        subscription = Subscription(asyncio.get_running_loop(), modality, patient_id)
        with self._lock:
            self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            self._subscriptions.discard(subscription)

    def publish(self, kind: str, event: dict) -> None:
        """From any thread. ``event`` names its ``modality`` and ``patient_id``."""
        item = (kind, event)
        with self._lock:
            targets = [s for s in self._subscriptions if s.wants(event)]
        for subscription in targets:
            try:
                subscription.loop.call_soon_threadsafe(subscription.offer, item)
            except RuntimeError:  # the loop has closed: the stream is gone
                self.unsubscribe(subscription)

    def close(self) -> None:
        """End every stream (at shutdown: open streams would otherwise hold the graceful stop)."""
        self.closed.set()
        with self._lock:
            targets = list(self._subscriptions)
        for subscription in targets:
            try:
                subscription.loop.call_soon_threadsafe(subscription.offer, None)
            except RuntimeError:
                pass

    async def stream(self, subscription: Subscription, is_disconnected) -> AsyncIterator[str]:
        """The text/event-stream body of one subscription."""
        try:
            yield "retry: 2000\n\n"
            while not self.closed.is_set():
                try:
                    item = await asyncio.wait_for(subscription.queue.get(), KEEPALIVE_S)
                except asyncio.TimeoutError:
                    if await is_disconnected():
                        return
                    yield ": keep-alive\n\n"
                    continue
                if item is None:
                    return
                if subscription.overflowed:
                    subscription.overflowed = False
                    yield "event: overflow\ndata: {}\n\n"
                kind, event = item
                yield f"event: {kind}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n"
        finally:
            self.unsubscribe(subscription)
