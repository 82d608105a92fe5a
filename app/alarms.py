"""Alarms: runs of alarming predictions become alarm rows, and each new alarm is POSTed to webhooks.

Rules (clinical definitions, not fitted to any record):
- ECG ``ventricular_run``: three or more consecutive beats predicted V, the usual definition of a
  ventricular run (non-sustained VT starts at three PVCs in a row).
- EEG ``seizure``: two or more consecutive 2 s windows predicted seizure (4 s), so that a single
  isolated window does not page anyone; the detector's median latency on CHB-MIT is one window.

A run is one alarm, however long: the row is keyed by the run's first window and extended while the
run continues, across segments. Detection runs in the request that stored the windows, after they
are committed, under the stream's lock, so only a stream's newest segment can have been stored
without its check (a crash in between); ``recheck`` repeats that check at start-up, and a check
repeated over windows already seen changes nothing. Webhook delivery runs on its own thread and
never holds up ingest.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
import numpy as np

from app.store import ModelRow, Store

log = logging.getLogger("biofo.alarms")


@dataclass(frozen=True)
class AlarmRule:
    kind: str
    cls: str
    min_run: int

    def in_alarm(self, predicted: Sequence[str]) -> np.ndarray:
        """Per window of one stream, in order: whether an alarm is up there, i.e. the window and the
        ``min_run - 1`` before it are all predicted ``cls``. The offline form of what
        ``AlarmDetector`` raises online, for evaluations that score alarms the daemon's way."""
        flags = np.asarray(predicted) == self.cls
        run = np.zeros(len(flags), dtype=np.int64)
        count = 0
        for i, flag in enumerate(flags):
            count = count + 1 if flag else 0
            run[i] = count
        return run >= self.min_run


ALARM_RULES = {
    "ecg": AlarmRule("ventricular_run", "V", 3),
    "eeg": AlarmRule("seizure", "seizure", 2),
}


class AlarmDetector:
    def __init__(self, store: Store, webhooks: Sequence[str]):
        self.store = store
        self.webhooks = tuple(webhooks)

    def observe(self, model: ModelRow, windows: Sequence[dict]) -> list[int]:
        """Look at newly stored windows (``id``, ``offset_s``, ``predicted``, in order) after the stream's
        earlier ones; return the ids of alarms raised or extended."""
        rule = ALARM_RULES.get(model.modality)
        if rule is None or not windows:
            return []
        # Enough of the past to finish a run too short to have raised an alarm yet; a longer run
        # already has one, which ends at the last window before these.
        tail = self.store.prediction_tail(model.id, windows[0]["id"], rule.min_run - 1)
        new_ids = {w["id"] for w in windows}
        open_alarm = None
        if tail and tail[-1]["predicted"] == rule.cls:
            open_alarm = self.store.alarm_containing(model.id, tail[-1]["id"])
        touched: list[int] = []
        run: list[dict] = []
        for window in [*tail, *windows]:
            if window["predicted"] == rule.cls:
                run.append(window)
                continue
            touched += self._close(model, rule, run, new_ids, open_alarm)
            run, open_alarm = [], None
        touched += self._close(model, rule, run, new_ids, open_alarm)
        return touched

    def _close(self, model: ModelRow, rule: AlarmRule, run: list[dict], new_ids: set[int], open_alarm: dict | None) -> list[int]:
        added = sum(w["id"] in new_ids for w in run)
        if not added:
            return []
        if open_alarm is not None:
            self.store.extend_alarm(open_alarm["id"], run[-1])
            return [open_alarm["id"]]
        if len(run) < rule.min_run:
            return []
        return [self.store.raise_alarm(model, rule.kind, run[0], run[-1], self.webhooks)]

    def recheck(self, model: ModelRow) -> list[int]:
        """Check the model's newest segment again (at start-up: a crash may have come between storing
        it and checking it)."""
        return self.observe(model, self.store.newest_segment_windows(model.id))


def alarm_payload(row: dict) -> dict:
    """What a webhook receives (and ``GET /v1/alarms`` lists)."""
    return {key: row[key] for key in (
        "id", "patient_id", "modality", "kind", "first_window_id", "last_window_id", "n_windows", "start_s",
        "end_s", "raised_at", "acknowledged_by", "acknowledged_at",
    )}


class WebhookNotifier:
    """One thread that POSTs each new alarm to every configured webhook, retrying with exponential
    backoff (``retry_s`` × 2^attempt, at most ``MAX_DELAY_S``) up to ``max_attempts``. Deliveries are
    rows, so a restart resumes the ones still owed."""

    MAX_DELAY_S = 300.0

    def __init__(self, store: Store, retry_s: float, max_attempts: int, timeout_s: float = 5.0,
             ):
        self.store = store
        self.retry_s = retry_s
        self.max_attempts = max_attempts
        self._client = httpx.Client(timeout=timeout_s)
        self._due: dict[int, float] = {}  # delivery id -> monotonic time of its next attempt
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="biofo-webhooks", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def notify(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
        self._client.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            try:
                owed = self.store.deliveries_owed(self.max_attempts)
            except Exception as error:  # the store may be briefly unavailable; try again later
                log.error("cannot read webhook deliveries: %s", error)
                owed = []
            for delivery in owed:
                if self._stop.is_set():
                    return
                if self._due.setdefault(delivery["id"], now) <= now:
                    self._attempt(delivery)
            owed_ids = {o["id"] for o in owed}
            pending = [t for d, t in self._due.items() if d in owed_ids]
            wait = max(0.05, min(pending) - time.monotonic()) if pending else 60.0
            self._wake.wait(wait)
            self._wake.clear()

    def _attempt(self, delivery: dict) -> None:
        alarm = self.store.alarm(delivery["alarm_id"])
        status, error = None, None
        try:
            response = self._client.post(delivery["url"], content=json.dumps({"alarm": alarm_payload(alarm)}),
                                  headers={"Content-Type": "application/json"})
            status = response.status_code
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except httpx.HTTPError as failure:
            error = f"{type(failure).__name__}: {failure}"
        self.store.record_delivery_attempt(delivery["id"], status, error)
        if error is None:
            self._due.pop(delivery["id"], None)
            return
        attempt = delivery["attempts"] + 1
        delay = min(self.MAX_DELAY_S, self.retry_s * 2 ** (attempt - 1))
        log.warning("webhook %s for alarm %s failed (%s); attempt %d of %d, next in %.1f s",
                    delivery["url"], delivery["alarm_id"], error, attempt, self.max_attempts, delay)
        self._due[delivery["id"]] = time.monotonic() + delay
