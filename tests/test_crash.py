"""kill -9 of the node in the middle of a replay, then a restart: the node
resumes from its stored head, no block a client saw is lost or changed, and
the replay goes on to the end with the L1 root matching."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from l1_stub.client import connect
from node.client import L2Client
from node.replay import ReplayOptions, run_replay
from node.wallet import rollup_client
from tests.devnet_process import TAPE, DevnetProcess
from tests.test_e2e import check_ledger


def test_kill9_mid_replay_then_resume(tmp_path: Path) -> None:
    datadir = tmp_path / "data"
    log = tmp_path / "devnet.log"
    node = DevnetProcess(datadir, log)
    node.start()
    opts = ReplayOptions(tape=str(TAPE), rpc=node.url, progress=False, rpc_batch=5)
    outcome: dict[str, Any] = {}

    def replay() -> None:
        try:
            outcome["summary"] = run_replay(opts)
        except Exception as exc:  # the node dies under it
            outcome["error"] = exc

    thread = threading.Thread(target=replay)
    thread.start()
    seen: dict[int, str] = {}
    try:
        with L2Client(node.url) as client:
            deadline = time.monotonic() + 60
            while client.block_number() < 4 and time.monotonic() < deadline:
                time.sleep(0.05)
            head = client.block_number()
            for n in range(head + 1):
                seen[n] = client.call("l2_getBlockByNumber", hex(n), False)["hash"]
        assert head >= 4, "replay did not get going"
    finally:
        node.kill9()
        thread.join(timeout=60)
    assert "error" in outcome, "the replay should have been cut off by the kill"

    restarted = DevnetProcess(datadir, log)
    restarted.port, restarted.l1_port = node.port, node.l1_port
    restarted.start()
    try:
        with L2Client(restarted.url) as client:
            assert client.block_number() >= max(seen)
            for n, block_hash in seen.items():
                assert client.call("l2_getBlockByNumber", hex(n), False)["hash"] == block_hash
            summary = run_replay(opts)
            assert summary["failed"] == 0, summary["errors"]
            assert summary["fills"] + summary["skipped"] == 1000
            assert summary["skipped"] > 0
            assert summary["rootsMatch"]
            with connect(restarted.l1_url) as w3:
                check_ledger(client, rollup_client(client, w3), "safe")
    finally:
        restarted.stop()
