"""The embedded L1 in its own process (l1_stub.process.L1Process): the
node-facing interface over JSON-RPC, a dead child named clearly, no orphan
after the parent is killed with SIGKILL, and a restart on the same datadir."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from l1_stub.client import send_transaction, wait_receipt
from l1_stub.process import L1Process, L1ProcessExited
from node.signing import dev_keys

sys.path.insert(0, str(Path(__file__).resolve().parent))
from devnet_process import ROOT, DevnetProcess, process_alive  # noqa: E402


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process_alive(pid):
            return True
        time.sleep(0.05)
    return False


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (FileNotFoundError, ProcessLookupError):
                continue
    return out


def _cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode()


def test_controls_over_rpc(tmp_path: Path) -> None:
    with L1Process(port=0, datadir=tmp_path / "l1") as l1:
        assert l1.dev_keys == dev_keys(10)
        assert l1.w3.eth.chain_id == 900 and l1.chain_id == 900
        number, ts = l1.head()
        assert l1.mine() == number + 1 and l1.mine(3) == number + 4
        assert l1.time_offset == 0
        assert l1.increase_time(3_600) == 3_600 == l1.time_offset
        assert l1.head()[1] < time.time() + 3_600 - 5
        assert l1.mine() == number + 5
        assert l1.head()[1] >= int(time.time()) + 3_600 - 1
        # a warp sent to the L1 port by another client shows at the next block
        httpx.post(l1.url, json={"jsonrpc": "2.0", "id": 1, "method": "evm_increaseTime",
                                 "params": ["0x64"]})
        l1.mine()
        assert l1.time_offset == 3_700
        ts = l1.head()[1]
        l1.set_next_block_timestamp(ts + 10_000)
        l1.mine()
        assert l1.head()[1] == ts + 10_000
        # transactions: pending until mined, as in-process
        tx = send_transaction(l1.w3, l1.dev_keys[4], to=l1.dev_accounts[5], gas=21_000, value=7)
        receipt = wait_receipt(l1.w3, tx, l1.mine)
        assert receipt["status"] == 1
        head = l1.head()
        pid = l1.pid
    assert not process_alive(pid) and l1.proc.returncode == 0
    with L1Process(port=0, datadir=tmp_path / "l1") as again:  # reopens the same chain
        assert again.head() == head and again.time_offset == 3_700
        assert again.w3.eth.get_transaction_receipt(tx)["status"] == 1


def test_dead_child_is_named() -> None:
    with L1Process(port=0) as l1:
        os.kill(l1.pid, signal.SIGKILL)
        l1.proc.wait(timeout=10)
        with pytest.raises(L1ProcessExited, match=f"pid {l1.pid}.*signal 9"):
            l1.head()
        with pytest.raises(L1ProcessExited, match="killed by signal 9"):
            l1.w3.eth.get_block("latest")


_ORPHAN_SCRIPT = """
import os, signal, sys
from l1_stub.process import L1Process
l1 = L1Process(port=0, datadir=sys.argv[1])
l1.mine(2)
print(l1.pid, l1.url, l1.head()[0], flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_parent_sigkill_leaves_no_orphan(tmp_path: Path) -> None:
    """A parent killed with SIGKILL: its L1 child exits by itself and
    releases the datadir, which the next L1 reopens at the same head."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", _ORPHAN_SCRIPT, str(tmp_path / "l1")], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == -signal.SIGKILL, out.stderr
    pid, _url, number = out.stdout.split()
    assert _wait_gone(int(pid), 10), "the L1 child outlived its parent"
    with L1Process(port=0, datadir=tmp_path / "l1") as l1:
        assert l1.head()[0] == int(number)


@pytest.mark.skipif(not os.environ.get("DERIVNET_SLOW"),
                    reason="two devnet starts (~1 min); DERIVNET_SLOW=1 runs it "
                           "(tests/test_crash.py kill -9s and restarts a devnet by default)")
def test_devnet_kill9_restarts_on_same_l1(tmp_path: Path) -> None:
    """kill -9 of a devnet node: no L1 child left holding the LevelDB lock or
    the L1 port, and a restart on the datadir finds the same L1 chain."""
    node = DevnetProcess(tmp_path / "data", tmp_path / "devnet.log")
    node.start()
    try:
        assert node.proc is not None
        kids = [p for p in _children(node.proc.pid) if "l1_stub" in _cmdline(p)]
        assert len(kids) == 1, kids
        rpc = {"jsonrpc": "2.0", "id": 1, "method": "eth_getBlockByNumber",
               "params": ["latest", False]}
        before = httpx.post(node.l1_url, json=rpc).json()["result"]
        config = httpx.post(node.url, json={"jsonrpc": "2.0", "id": 1,
                                            "method": "l2_rollupConfig", "params": []}).json()
        node.kill9()
        assert _wait_gone(kids[0], 10), "the L1 child outlived the node"
        restarted = DevnetProcess(tmp_path / "data", tmp_path / "devnet.log")
        restarted.port, restarted.l1_port = node.port, node.l1_port
        restarted.start()
        node = restarted
        after = httpx.post(node.l1_url, json=rpc).json()["result"]
        assert int(after["number"], 16) >= int(before["number"], 16)
        block = httpx.post(node.l1_url, json={**rpc, "params": [before["number"], False]}).json()
        assert block["result"]["hash"] == before["hash"]
        again = httpx.post(node.url, json={"jsonrpc": "2.0", "id": 1,
                                           "method": "l2_rollupConfig", "params": []}).json()
        assert again["result"]["rollup_address"] == config["result"]["rollup_address"]
        assert node.proc is not None
        kids = [p for p in _children(node.proc.pid) if "l1_stub" in _cmdline(p)]
    finally:
        node.stop()
    assert kids and all(_wait_gone(p, 10) for p in kids), "a stopped node left its L1 child"
