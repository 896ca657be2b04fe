"""`lapo bench`: the comparison arithmetic, and one short run against both live servers."""

from __future__ import annotations

import pytest

from lapo.loadtests.bench import COMPARISONS, KEYS, compare, run_bench, summarize


def _round(rps: float, ttft: float) -> dict:
    return {"requests": 8, "errors": 0, "requests_per_s": rps, "completion_tokens_per_s": rps * 10,
            "ttft_p50_ms": ttft, "ttft_p95_ms": ttft * 2, "itl_mean_ms": 2.0, "e2e_p50_ms": 100.0,
            "e2e_p95_ms": 150.0, "e2e_p99_ms": None}


def test_compare_pairs_rounds_and_reports_spread() -> None:
    ours = [_round(r, t) for r, t in ((10, 20), (8, 10), (12, 30), (9, 10))]
    raw = [_round(r, t) for r, t in ((10, 10), (10, 10), (10, 10), (10, 10))]
    report = compare({"lapo": ours, "raw_vllm": raw})
    # Paired ratios 1.0, 0.8, 1.2, 0.9: median 0.95; medians 9.5 vs 10.
    assert report["ratio_per_round"]["requests_per_s"] == [1.0, 0.8, 1.2, 0.9]
    assert report["ratio_lapo_over_raw"]["requests_per_s"] == 0.95
    assert report["ratio_of_medians"]["requests_per_s"] == 0.95
    q1, q3 = report["ratio_quartiles"]["requests_per_s"]
    assert 0.8 <= q1 < 0.95 < q3 <= 1.2
    assert report["ratio_lapo_over_raw"]["ttft_p50_ms"] == 1.5  # ratios 2, 1, 3, 1
    assert report["ratio_of_medians"]["ttft_p50_ms"] == 1.5
    # A metric missing on one side is left out, never divided by.
    assert "e2e_p99_ms" not in report["ratio_lapo_over_raw"]
    assert "e2e_p99_ms" not in report["ratio_of_medians"]


def test_compare_has_no_quartiles_under_four_rounds() -> None:
    report = compare({"lapo": [_round(10, 10)] * 3, "raw_vllm": [_round(10, 10)] * 3})
    assert report["ratio_quartiles"] == {}
    assert report["ratio_lapo_over_raw"]["requests_per_s"] == 1.0


@pytest.mark.e2e
def test_bench_short_run_against_raw_vllm_defaults_and_same_flags(tiny_checkpoint,
                                                                  tmp_path) -> None:
    """All three servers at the defaults `lapo bench` uses (ours and raw vLLM compiled, auto
    dtype), two concurrency levels, every request served."""
    out = tmp_path / "bench.json"
    report = run_bench(tiny_checkpoint, requests=4, concurrency=[1, 2], out=out, max_tokens=16,
                       max_model_len=512, rounds=2)
    assert out.is_file() and report["concurrency"] == [1, 2]
    for level in ("1", "2"):
        comparisons = report["by_concurrency"][level]
        assert set(comparisons) == {"vs_defaults", "vs_same_flags"}
        for key, (ours, raw, label) in COMPARISONS.items():
            comparison = comparisons[key]
            for name in (ours, raw):
                rounds = comparison["per_round"][name]
                assert len(rounds) == 2
                assert all(r["errors"] == 0 and r["requests"] == 4 for r in rounds), rounds
                assert comparison["results"][name]["completion_tokens_per_s"] > 0
            for metric in ("requests_per_s", "completion_tokens_per_s", "e2e_p50_ms"):
                assert len(comparison["ratio_per_round"][metric]) == 2
                assert comparison[f"ratio_{label}"][metric] > 0
            assert set(comparison[f"ratio_{label}"]) <= set(KEYS)
    rows = report["summary"]
    assert [(r["concurrency"], r["comparison"]) for r in rows] == [
        (1, "vs_defaults"), (1, "vs_same_flags"), (2, "vs_defaults"), (2, "vs_same_flags")]
    assert all(isinstance(r["meets_targets"], bool) for r in rows)


def test_summary_meets_targets_only_by_both_estimates() -> None:
    def comparison(paired: float, of_medians: float, ttft: float) -> dict:
        return {"ratio_lapo_over_raw": {"completion_tokens_per_s": paired, "ttft_p50_ms": ttft},
                "ratio_of_medians": {"completion_tokens_per_s": of_medians, "ttft_p50_ms": ttft}}

    rows = summarize({"8": {"vs_defaults": comparison(0.99, 0.98, 1.0)},
                      "16": {"vs_defaults": comparison(0.99, 0.96, 1.0)},
                      "32": {"vs_defaults": comparison(1.2, 1.1, 1.06)}})
    assert [r["meets_targets"] for r in rows] == [True, False, False]
    assert rows[0]["completion_tokens_per_s"] == {"paired": 0.99, "of_medians": 0.98}


def test_ab_settings_parse_and_refuse_malformed() -> None:
    from lapo.loadtests.ab import _env

    assert _env(["A=1", "B=x=y", "C="]) == {"A": "1", "B": "x=y", "C": ""}
    with pytest.raises(SystemExit, match="NAME=VALUE"):
        _env(["NOVALUE"])
    with pytest.raises(SystemExit):
        _env(["=1"])


def test_compare_labels_any_two_targets() -> None:
    report = compare({"a": [_round(12, 10)], "b": [_round(10, 10)]}, "a", "b", "a_over_b")
    assert report["ratio_a_over_b"]["requests_per_s"] == 1.2
