"""kill -9 of the node in the middle of a replay, then a restart: the node
resumes from its stored head, no block a client saw is lost or changed, and
the replay goes on to the end with the L1 root matching."""

from __future__ import annotations

import os
import signal
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


def _l1_pid(node: DevnetProcess) -> int:
    with connect(node.l1_url) as w3:
        return int(w3.provider.make_request("derivnet_pid", [])["result"], 16)


def test_kill9_of_the_l1_process_mid_replay(tmp_path: Path) -> None:
    """On a datadir the node starts a new L1 process from the L1's datadir
    when its L1 child is killed; the replay finishes with the roots matching
    and the ledger balanced. Transactions pending in the dead child are sent
    again by the batcher."""
    node = DevnetProcess(tmp_path / "data", tmp_path / "devnet.log")
    node.start()
    opts = ReplayOptions(tape=str(TAPE), rpc=node.url, progress=False, rpc_batch=20, limit=300)
    try:
        first = _l1_pid(node)
        outcome: dict[str, Any] = {}
        thread = threading.Thread(target=lambda: outcome.update(summary=run_replay(opts)))
        thread.start()
        with L2Client(node.url) as client:
            deadline = time.monotonic() + 60
            while client.block_number() < 4 and time.monotonic() < deadline:
                time.sleep(0.05)
        os.kill(first, signal.SIGKILL)
        thread.join(timeout=240)
        assert not thread.is_alive(), "the replay did not finish"
        summary = outcome["summary"]
        assert summary["failed"] == 0, summary["errors"]
        assert summary["rootsMatch"]
        assert _l1_pid(node) != first
        with L2Client(node.url) as client, connect(node.l1_url) as w3:
            check_ledger(client, rollup_client(client, w3), "safe")
    finally:
        node.stop()
    assert "restarting it from its datadir" in (tmp_path / "devnet.log").read_text()


def test_kill9_of_an_in_memory_l1_stops_the_devnet(tmp_path: Path) -> None:
    """In memory the L1 chain dies with its process: the devnet exits 1 with
    one line saying so, instead of retrying forever."""
    node = DevnetProcess(None, tmp_path / "devnet.log")
    node.start()
    try:
        os.kill(_l1_pid(node), signal.SIGKILL)
        assert node.proc is not None
        node.proc.wait(timeout=60)
    finally:
        node.stop()
    out = (tmp_path / "devnet.log").read_text()
    assert node.proc.returncode == 1, out
    assert "Traceback" not in out
    assert "an in-memory L1 is gone with its process" in out.splitlines()[-1]
