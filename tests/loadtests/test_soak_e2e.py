"""The soak test's short mode on the live server: no errors, memory reported, engine idle."""

from __future__ import annotations

import asyncio

import pytest

from lapo.loadtests.soak import soak

pytestmark = pytest.mark.e2e


def test_soak_short(server) -> None:
    report = asyncio.run(soak(server.url, server.model, server.proc.pid, requests=42,
                              concurrency=6, max_seconds=300, disconnect_every=5,
                              max_tokens=160, api_key="sk-test"))
    print(report)
    assert report["finished"] == 42
    assert report["errors"] == 0, report["error_samples"]
    assert report["refused"] == 0 and report["unanswered"] == 0
    assert report["disconnected"] == 8
    assert report["ok"] == 42 - 8
    assert report["engine_idle_at_end"]
    memory = report["memory"]
    assert memory["samples"] >= 2
    for part in ("server_process", "process_tree"):
        assert memory[part]["end_mib"] > 0
    # A gross leak (e.g. every response kept) shows within a run this short; the flatness
    # figure that matters is the long run's, in docs/RELIABILITY.md.
    assert memory["server_process"]["growth_mib"] < 100
    # Per-process breakdown: the API process and vLLM's engine processes, anon/file MiB.
    first, last = report["processes"][0], report["processes"][-1]
    assert last[1] == 42 and first[1] <= last[1]
    names = " ".join(last[2])
    assert "EngineCore" in names, names
    assert all(parts["anon"] > 0 and "file" in parts for parts in last[2].values())
