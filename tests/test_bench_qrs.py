"""``biofo bench qrs`` on two real records."""

from __future__ import annotations

from app.cli import build_parser
from bench.qrs import run


def test_bench_qrs_reports_the_cli_keys() -> None:
    result = run(records=["100", "208"])
    assert {"records", "beats", "sensitivity", "ppv", "ms_per_segment", "baseline_ms_per_segment"} <= set(result)
    # Both detectors ran on the same segments; the compiled one costs a fraction of the old path.
    assert result["segments"] == result["baseline"]["segments"] == 2 * 181
    assert 0 < result["ms_per_segment"] < result["baseline_ms_per_segment"]
    assert result["baseline"]["sensitivity"] >= 0.99 and result["baseline"]["ppv"] >= 0.99
    assert result["records"] == ["100", "208"]
    assert result["beats"] == 2273 + 2955
    # 208 (992 PVCs, couplets, fusion beats) is the hardest of the 44 for the fused detector.
    assert result["sensitivity"] >= 0.98 and result["ppv"] >= 0.99
    assert result["per_record"]["100"]["sensitivity"] == result["per_record"]["100"]["ppv"] == 1.0
    assert result["per_record"]["208"]["sensitivity"] >= 0.97 and result["per_record"]["208"]["ppv"] >= 0.99
    assert result["ec57"]["beats"] < result["beats"]


def test_cli_wires_bench_qrs() -> None:
    args = build_parser().parse_args(["bench", "qrs", "--records", "100", "208", "--json"])
    assert args._command.target == "bench.qrs:run" and args.records == ["100", "208"] and args.json
