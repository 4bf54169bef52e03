"""Soak: 50,000 fills through a devnet process at default block and batch
times; every block lands on L1 and the L1 root matches the L2 root.

Behind DERIVNET_SLOW=1 (minutes). The tape is the shared ETH-USD tape
repeated with fresh trade ids and timestamps, written to a temporary file
(the shared data is read, never copied into the project).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from node.client import L2Client
from node.replay import ReplayOptions, run_replay
from tests.devnet_process import TAPE, DevnetProcess

SLOW = os.environ.get("DERIVNET_SLOW") == "1"
FILLS = int(os.environ.get("DERIVNET_SOAK_FILLS", "50000"))


def repeated_tape(path: Path, trades: int) -> Path:
    """The shared tape repeated to ``trades`` rows: ids and timestamps keep
    increasing, prices and sizes are the tape's."""
    with open(TAPE, newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    span_ms = int(body[-1][1]) - int(body[0][1]) + 1
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(header)
        for i in range(trades):
            lap, row = divmod(i, len(body))
            src = list(body[row])
            src[0] = str(i)
            src[1] = str(int(src[1]) + lap * span_ms)
            src[2] = str(int(src[2]) + lap * len(body))
            out.writerow(src)
    return path


@pytest.mark.skipif(not SLOW, reason="set DERIVNET_SLOW=1 (50,000 fills, several minutes)")
def test_soak_50k_fills_every_block_on_l1(tmp_path: Path) -> None:
    tape = repeated_tape(tmp_path / "ethusdt-soak.csv", FILLS)
    devnet = DevnetProcess(None, tmp_path / "devnet.log",
                           **{"--block-time": "0.25", "--batch-interval": "2"})
    devnet.start()
    try:
        summary = run_replay(ReplayOptions(tape=str(tape), rpc=devnet.url, market="ETH-USD",
                                           progress=False, timeout=300.0))
        assert summary["failed"] == 0, summary
        assert summary["fills"] == FILLS, summary
        assert summary["rootsMatch"], summary
        with L2Client(devnet.url) as client:
            status = client.sync_status()
            assert status["safe_l2"]["number"] >= summary["lastBlock"], status
            assert status["batcher_error"] is None, status
            assert not status["frozen"]
        print(f"\nsoak: {summary['fills']} fills, {summary['blocks']} blocks, "
              f"{summary['batches']} batches, {summary.get('fillsPerSecond')} fills/s")
    finally:
        devnet.stop()
