"""API fuzzing, bounded: schemathesis against the daemon's /openapi.json, every operation, with no token
and with a token of each role (``bench.fuzz``; ``biofo bench fuzz`` runs the longer version)."""

from __future__ import annotations

from bench.fuzz import ROLES, run


def test_schemathesis_finds_no_server_error_and_no_undocumented_answer(tmp_path) -> None:
    result = run(max_examples=10, seed_value=0, out=str(tmp_path))
    assert result["daemon_alive"] and result["tracebacks_in_log"] == 0
    assert set(result["roles"]) == set(ROLES)
    for role, outcome in result["roles"].items():
        assert outcome["exit_status"] == 0, f"{role}:\n{outcome['output']}"
        assert outcome["failures"] == [] and outcome["errors"] == [], role
        # Every operation was exercised, not skipped: hundreds of cases per role.
        assert outcome["test_cases"]["generated"] > 300, (role, outcome["test_cases"])
