"""Servers for the benchmarks: how `lapo serve` is started (environment, process group)."""

from __future__ import annotations

import subprocess

from lapo.loadtests import servers


def test_start_ours_passes_extra_env_in_own_group_same_session(monkeypatch, tmp_path) -> None:
    seen = {}

    def fake_popen(cmd, **kw):
        seen.update(kw, cmd=cmd)
        return "proc"

    monkeypatch.setattr(subprocess, "Popen", fake_popen)
    monkeypatch.setenv("KEEP_ME", "1")
    assert servers.start_ours(tmp_path, 1234, 512, extra_env={"ONEDNN_X": "8"}) == "proc"
    env = seen["env"]
    assert env["ONEDNN_X"] == "8" and env["KEEP_ME"] == "1"
    assert env["LAPO_PORT"] == "1234" and env["LAPO_MAX_MODEL_LEN"] == "512"
    # Own process group (stopped and killed as one) but not a new session (autogroup).
    assert seen["process_group"] == 0 and not seen.get("start_new_session")
