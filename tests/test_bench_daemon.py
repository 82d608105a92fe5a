"""``biofo bench daemon`` run as a user runs it: real ECG and EEG devices against a daemon in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIOFO = Path(sys.executable).with_name("biofo")
CLI_KEYS = {"streams", "eeg_streams", "windows_per_s", "p50_post_ms", "p99_post_ms", "p99_label_to_update_ms",
            "rss_growth", "peak_rss_mib", "db_bytes_per_stream_hour"}


def test_ecg_and_eeg_devices_with_binary_bodies_and_a_resident_bound() -> None:
    """Two MIT-BIH devices and one CHB-MIT device send float32 bodies to a daemon that keeps two models
    in memory: every segment answered, nothing lost, every label learned, the documented keys filled."""
    done = subprocess.run(
        [str(BIOFO), "bench", "daemon", "--streams", "2", "--eeg-streams", "1",
         "--duration", "20", "--body", "float32", "--max-resident", "2", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert CLI_KEYS <= result.keys()
    assert (result["streams"], result["eeg_streams"], result["body"], result["max_resident"]) == (2, 1, "float32", 2)
    assert result["errors"] == 0 and result["segments_unsent"] == 0, result["error_examples"]
    assert "Traceback" not in result["daemon_log_tail"], result["daemon_log_tail"]
    assert result["lost_windows"] == result["lost_labels"] == 0 and result["integrity_check"] == "ok"
    assert result["p99_post_ms_eeg"] is not None and result["p99_post_ms_ecg"] is not None
    assert result["labels"] >= 2 and result["p99_label_to_update_ms"] is not None
    assert result["peak_rss_mib"] >= result["rss_mib_end"] > 0
    assert result["db_bytes_per_stream_hour"] == result["db_bytes"] / (3 * result["elapsed_s"] / 3600.0) > 0
    assert result["sigterm_exit_status"] == 0
