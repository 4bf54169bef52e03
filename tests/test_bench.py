"""Smoke test of scripts/bench (DERIVNET_SLOW=1: about 2 minutes): a couple
of seconds of every benchmark, and every figure of issue 6 printed (in-process fills/s with distinct traders and
batch-sized blocks, end-to-end fills/s with batches and with single requests,
soft-confirmation latency p50/p99, peak RSS)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FIGURES = [
    "in_process_fills_per_s", "in_process_fills_per_s_with_funding", "in_process_accounts",
    "in_process_fills_per_s_with_risk", "in_process_risk_cpu_us_per_fill",
    "in_process_largest_block_bytes",
    "e2e_batch_fills_per_s", "e2e_batch_l1_fills_per_s", "e2e_batch_l1_catch_up_s",
    "soft_confirmation_batch_p50_ms", "soft_confirmation_batch_p99_ms",
    "e2e_single_fills_per_s", "e2e_single_l1_fills_per_s", "e2e_single_l1_catch_up_s",
    "soft_confirmation_single_p50_ms", "soft_confirmation_single_p99_ms",
    "node_peak_rss_mb", "l1_peak_rss_mb",
    "replica_derivation_fills_per_s", "replica_from_l1_fills_per_s",
    "replica_in_process_same_workload_fills_per_s", "replica_accounts",
    "osp_gas_deposit", "osp_gas_fill", "osp_gas_oracleprice", "osp_gas_withdraw",
    "osp_gas_listmarket", "osp_gas_fundingtick", "osp_gas_fillfunding",
    "osp_gas_fill_at_limits", "osp_gas_withdraw_at_limits",
    "stream_p50_ms", "stream_p99_ms", "block_cadence_ms", "block_cadence_with_stalled_ms",
    "stalled_consumers_dropped", "dispute_challenger_txs", "dispute_total_txs", "dispute_total_gas",
    "l1_batch_gas", "l1_batch_cpu_ms", "l1_cap_fills_per_s", "l1_cap_fills_per_cpu_s",
]


def test_one_step_proof_gas_targets() -> None:
    """Issue 7's gas targets (deterministic, so asserted here): every type
    below 1M, on a small state and at the limits; a Fill at most 400k gas.
    Issue 7 asked 350k: issue 8's bigger leaves (open interest, the insurance
    fund, settled funding) and the markets-leaf write took the Fill from 309k
    to 398k (docs/protocol.md "One-step proof", gas): this bound keeps it from
    growing further until the Fill path is rewritten to read its leaves in
    place. The risk types (up to ~3.3M at the limits) are the bench's."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench_disputes import osp_gas

    gas = osp_gas(quiet=True, risk=False)
    types = ("deposit", "fill", "oracleprice", "withdraw", "listmarket", "fundingtick",
             "fillfunding")
    assert all(0 < gas[f"osp_gas_{t}"] < 1_000_000 for t in types)
    assert all(0 < gas[f"osp_gas_{t}_at_limits"] < 1_000_000 for t in types)
    assert gas["osp_gas_fill"] <= 400_000 and gas["osp_gas_fillfunding"] <= 400_000


@pytest.mark.skipif(os.environ.get("DERIVNET_SLOW") != "1",
                    reason="every benchmark for a couple of seconds: set DERIVNET_SLOW=1 "
                           "(about 2 minutes)")
def test_bench_prints_every_figure() -> None:
    cmd = [sys.executable, "scripts/bench.py", "--fills", "600", "--accounts", "1000",
           "--duration", "2", "--clients", "2", "--batch-pairs", "20", "--connections", "2",
           "--max-rate-batch", "400", "--max-rate-single", "200", "--probe-interval", "0.2",
           "--catch-up", "60", "--replica-fills", "300", "--replica-accounts", "20",
           "--dispute-steps", "60", "--stream-subscribers", "4", "--stream-procs", "1",
           "--stream-stalled", "1", "--stream-limit", "150", "--stream-duration", "1",
           "--l1-cap-batches", "2", "--json"]
    out = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    for name in FIGURES:
        assert f"  {name}: " in text, (name, text)
    figures = json.loads(text.strip().splitlines()[-1])["figures"]
    assert set(FIGURES) <= set(figures)
    assert figures["in_process_accounts"] == 1000
    assert figures["in_process_largest_block_bytes"] <= 131_072
    assert figures["in_process_fills_per_s"] > 0
    assert figures["in_process_fills_per_s_with_funding"] > 0
    assert figures["in_process_fills_per_s_with_risk"] > 0
    assert figures["e2e_batch_fills_per_s"] > 0 and figures["e2e_single_fills_per_s"] > 0
    for mode in ("batch", "single"):
        p50, p99 = figures[f"soft_confirmation_{mode}_p50_ms"], figures[f"soft_confirmation_{mode}_p99_ms"]
        assert p50 is not None and p99 is not None and 0 < p50 <= p99
        assert figures[f"e2e_{mode}_l1_catch_up_s"] is not None  # every sealed block reached L1
    assert figures["node_peak_rss_mb"] > 0 and figures["l1_peak_rss_mb"] > 0
    assert figures["dispute_winner"] == "challenger_won"
    assert figures["dispute_challenger_txs"] <= figures["dispute_challenger_tx_bound"]
    types = ("deposit", "fill", "oracleprice", "withdraw", "listmarket", "fundingtick",
             "fillfunding")
    # gas is deterministic: issue 7's targets are checked here, not speed
    assert all(0 < figures[f"osp_gas_{t}"] < 1_000_000 for t in types)
    assert all(0 < figures[f"osp_gas_{t}_at_limits"] < 1_000_000 for t in types)
    assert figures["osp_gas_fill"] <= 400_000
    assert 0 < figures["stream_p50_ms"] <= figures["stream_p99_ms"]
    assert figures["stream_blocks_missed"] == 0
