"""``biofo db stats`` and ``biofo db vacuum``: the database as hospital IT sees it.

``stats`` only reads (WAL readers run beside the daemon). ``vacuum`` gives free pages back to the
filesystem. Retention frees pages inside the file, and new rows reuse them, so the file stops growing
without any vacuum; a vacuum is for taking the space back (e.g. after shortening retention).

- Default (incremental): ``PRAGMA incremental_vacuum`` in steps of ``STEP_PAGES`` pages, each its own
  short write transaction, so it is safe while the daemon runs: a POST waits for one step at most.
  It needs a database whose ``auto_vacuum`` is incremental: every database created by this version;
  an older one says so and asks for ``--full`` once.
- ``--full``: ``VACUUM`` rewrites the whole file (and turns its ``auto_vacuum`` incremental). It holds
  the database for the whole rewrite and needs as much free disk as the database, so it refuses while
  a daemon serves the file (the daemon's lock beside it is held).
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from typing import Any, NoReturn

from app.retention import RetentionPolicy
from app.server import _instance_lock
from app.settings import Settings
from app.store import Store, StoreUnavailable

STEP_PAGES = 256  # 1 MiB of 4 KiB pages per transaction


def _iso(at: float | None) -> str | None:
    return None if at is None else datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")


def stats(db: str | None = None, progress: bool = False) -> dict[str, Any]:
    settings = Settings.from_env(db=db)
    if not settings.db.exists():
        _fail("stats", f"no database at {settings.db}")
    store = Store(settings.db)
    try:
        size = store.size()
        found = store.stats()
    finally:
        store.close()
    policy = RetentionPolicy.from_settings(settings)
    return {
        "db": str(settings.db),
        "bytes": size.bytes,
        "free_bytes": size.free_bytes,
        "wal_bytes": size.wal_bytes,
        "page_size": size.page_size,
        "auto_vacuum": size.auto_vacuum,
        **found,
        "oldest_window": _iso(found["oldest_window_at"]),
        "oldest_sample_kept": _iso(found["oldest_sample_kept_at"]),
        "retention": {
            "samples_hours": policy.samples_hours,
            "windows_hours": policy.windows_hours,
            "checkpoints": policy.checkpoints,
        },
    }


def vacuum(db: str | None = None, full: bool = False, progress: bool = False) -> dict[str, Any]:
    settings = Settings.from_env(db=db)
    if not settings.db.exists():
        _fail("vacuum", f"no database at {settings.db}")
    started = time.perf_counter()
    if full:
        try:
            lock = _instance_lock(settings.db)
        except RuntimeError as error:
            _fail(
                "vacuum",
                f"{error}; a full VACUUM holds the database for the whole rewrite: stop the daemon"
                " first, or run without --full (incremental, safe while it runs)",
            )
        store = Store(settings.db)
        try:
            before = store.size()
            store.vacuum_full()
            after = store.size()
        finally:
            store.close()
            lock.close()
        longest_ms = 1e3 * (time.perf_counter() - started)
    else:
        store = Store(settings.db)
        try:
            before = store.size()
            if before.auto_vacuum != "incremental":
                _fail(
                    "vacuum",
                    f"{settings.db} was created with auto_vacuum={before.auto_vacuum}; run"
                    " 'biofo db vacuum --full' once with the daemon stopped (it also makes later"
                    " vacuums incremental)",
                )
            longest_ms, left = 0.0, before.free_bytes // before.page_size
            while left:
                step = time.perf_counter()
                left = store.incremental_vacuum(STEP_PAGES)
                longest_ms = max(longest_ms, 1e3 * (time.perf_counter() - step))
            after = store.size()
        except StoreUnavailable as error:
            _fail("vacuum", str(error))
        finally:
            store.close()
    return {
        "db": str(settings.db),
        "mode": "full" if full else "incremental",
        "bytes_before": before.bytes,
        "bytes_after": after.bytes,
        "freed_bytes": before.bytes - after.bytes,
        "free_bytes_after": after.free_bytes,
        "auto_vacuum": after.auto_vacuum,
        "longest_transaction_ms": longest_ms,
        "seconds": time.perf_counter() - started,
    }


def _fail(command: str, message: str) -> NoReturn:
    print(f"biofo db {command}: {message}", file=sys.stderr)
    raise SystemExit(2)
