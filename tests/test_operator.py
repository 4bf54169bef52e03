"""Operator safety: flag ranges, one-line CLI errors, --version, datadir
restarts that ask for another genesis/preset/window, devnet controls that can
be switched off, a non-loopback warning, a genesis sequencer other than dev
account 0, and Ctrl-C."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import trio
from click.testing import CliRunner

from node.cli import _exposure_warning, main
from node.crypto import address_of
from node.datadir import DatadirMismatch
from node.node import Node, NodeConfig
from node.signing import Signer, dev_keys
from tests.devnet_process import ROOT, DevnetProcess, free_port

KEYS = dev_keys(10)


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_version() -> None:
    code, out = cli("--version")
    assert code == 0 and out.startswith("derivnet, version ")


@pytest.mark.parametrize("flag,value", [
    ("--block-time", "0"), ("--block-time", "-1"), ("--batch-interval", "0"),
    ("--l1-block-time", "0.1"), ("--max-block-txs", "0"), ("--port", "70000"),
    ("--escape-delay", "-5"), ("--sequencer-key", "0x1234"),
])
def test_devnet_flag_ranges(flag: str, value: str) -> None:
    code, out = cli("devnet", flag, value)
    assert code == 2, out
    assert "Invalid value" in out or "Error" in out
    assert "Traceback" not in out


def test_cli_errors_are_one_line() -> None:
    port = free_port()  # nothing listens there
    for args in (["status", "--rpc", f"http://127.0.0.1:{port}"],
                 ["deposit", "5", "--rpc", f"http://127.0.0.1:{port}"],
                 ["withdraw", "5", "--private-key", "0xzz"]):
        code, out = cli(*args)
        assert code in (1, 2), out
        assert "Traceback" not in out
        errors = [line for line in out.splitlines() if line.startswith("Error")]
        assert len(errors) == 1, out


def test_non_loopback_warning() -> None:
    assert _exposure_warning("127.0.0.1", True) is None
    assert _exposure_warning("localhost", True) is None
    assert _exposure_warning("::1", True) is None
    text = _exposure_warning("0.0.0.0", True)
    assert text and "unlocked dev accounts" in text and "devnet controls" in text
    text = _exposure_warning("192.168.1.5", False)
    assert text and "unlocked dev accounts" in text and "devnet controls" not in text


def test_datadir_restart_refuses_other_genesis_preset_or_window(tmp_path: Path) -> None:
    datadir = tmp_path / "data"
    node = Node(NodeConfig(datadir=str(datadir), escape_delay=300))
    chain_id, rollup = node.genesis.l2_chain_id, node.deployment.rollup
    node.close()

    other = json.loads((ROOT / "node" / "genesis.json").read_text())
    other["l2ChainId"] = 902
    other_path = tmp_path / "other.json"
    other_path.write_text(json.dumps(other))
    for config, needle in (
        (NodeConfig(datadir=str(datadir), genesis_path=str(other_path)), "another genesis"),
        (NodeConfig(datadir=str(datadir), preset="mainnet"), "--preset devnet"),
        (NodeConfig(datadir=str(datadir), escape_delay=120), "escape_delay 300"),
        (NodeConfig(datadir=str(datadir), challenge_window=5), "challenge_window 60"),
    ):
        with pytest.raises(DatadirMismatch, match=needle):
            Node(config)

    # the same flags, or none, reopen the chain as it was
    for config in (NodeConfig(datadir=str(datadir)),
                   NodeConfig(datadir=str(datadir), escape_delay=300, preset="devnet",
                              genesis_path=str(ROOT / "node" / "genesis.json"))):
        node = Node(config)
        assert (node.genesis.l2_chain_id, node.deployment.rollup) == (chain_id, rollup)
        assert node.stored_config["escape_delay"] == 300
        node.close()


def test_restored_custom_genesis_is_kept_without_the_flag(tmp_path: Path) -> None:
    custom = json.loads((ROOT / "node" / "genesis.json").read_text())
    custom["l2ChainId"] = 4242
    path = tmp_path / "custom.json"
    path.write_text(json.dumps(custom))
    node = Node(NodeConfig(datadir=str(tmp_path / "d"), genesis_path=str(path)))
    node.close()
    node = Node(NodeConfig(datadir=str(tmp_path / "d")))
    assert node.genesis.l2_chain_id == 4242
    node.close()


def test_l1_datadir_without_l2_store_is_refused(tmp_path: Path) -> None:
    node = Node(NodeConfig(datadir=str(tmp_path / "d")))
    node.close()
    import shutil

    shutil.rmtree(tmp_path / "d" / "l2")
    with pytest.raises(DatadirMismatch, match="L2 store beside it is empty"):
        Node(NodeConfig(datadir=str(tmp_path / "d")))


def _genesis_with_sequencer(tmp_path: Path, address: bytes) -> Path:
    data = json.loads((ROOT / "node" / "genesis.json").read_text())
    data["sequencer"] = "0x" + address.hex()
    path = tmp_path / "genesis.json"
    path.write_text(json.dumps(data))
    return path


async def _post_batch_mining(node: Node) -> int | None:
    """node.post_batch while mining L1 blocks (nothing else mines here)."""
    async with trio.open_nursery() as nursery:
        async def miner() -> None:
            while True:
                await trio.sleep(0.1)
                node.l1.mine()

        nursery.start_soon(miner)
        with trio.fail_after(30):
            index = await node.post_batch()
        nursery.cancel_scope.cancel()
    return index


def test_genesis_sequencer_other_than_account_0(tmp_path: Path) -> None:
    """A genesis sequencer that is another dev account, or a key passed with
    --sequencer-key, signs the batches; they land on L1."""
    outsider = bytes.fromhex("11" * 32)
    path = _genesis_with_sequencer(tmp_path, address_of(outsider))
    with pytest.raises(ValueError, match="not a dev account"):
        Node(NodeConfig(genesis_path=str(path)))
    with pytest.raises(ValueError, match="genesis names"):
        Node(NodeConfig(genesis_path=str(path), sequencer_key=KEYS[7]))

    for key in (outsider, None):
        gen = path if key is not None else _genesis_with_sequencer(tmp_path, address_of(KEYS[4]))
        node = Node(NodeConfig(genesis_path=str(gen), sequencer_key=key))
        try:
            oracle = Signer(KEYS[1])
            tx = oracle.oracle_price(node.chain.domain, 1, 170000, int(node.clock()))
            node.sequencer.send_oracle_price(tx)
            node.sequencer.seal()
            index = trio.run(_post_batch_mining, node)
            assert index == 0
            assert node.rollup.batch_count() == 1
            assert node.rollup.latest_state_root() == node.chain.head.header.state_root
        finally:
            node.close()


def test_no_devnet_controls(tmp_path: Path) -> None:
    devnet = DevnetProcess(None, tmp_path / "devnet.log", **{"--no-devnet-controls": None})
    devnet.start()
    try:
        def call(url: str, method: str, params: list[object]) -> dict[str, object]:
            return httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method,
                                         "params": params}).json()

        reply = call(devnet.url, "devnet_increaseTime", [100])
        assert reply["error"]["code"] == -32601
        for method, params in (("evm_increaseTime", [100]),
                               ("evm_setNextBlockTimestamp", [2**31]),
                               ("anvil_mine", [5, 100])):
            reply = call(devnet.l1_url, method, params)
            assert "error" in reply and "disabled" in reply["error"]["message"], reply
        assert "result" in call(devnet.url, "eth_blockNumber", [])
    finally:
        devnet.stop()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_stops_cleanly(tmp_path: Path, signum: int) -> None:
    """Ctrl-C, and SIGTERM as ``kill``/``docker stop`` send it, stop the devnet
    with exit 0 and no traceback."""
    port, l1_port = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "node.cli", "devnet", "--port", str(port), "--l1-port",
         str(l1_port), "--datadir", str(tmp_path / "d")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if b"ready" in line:
                break
        proc.send_signal(signum)
        out = proc.communicate(timeout=30)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:  # else a later test reports the unclosed pipe
            proc.stdout.close()
    assert proc.returncode == 0, out
    assert "Traceback" not in out
    assert "stopped" in out


def _held_port() -> tuple[socket.socket, int]:
    """A listening socket on a free loopback port (the port stays bound)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock, sock.getsockname()[1]


def test_l2_port_in_use_is_one_line_naming_the_flag() -> None:
    sock, port = _held_port()
    with sock:
        proc = subprocess.run(
            [sys.executable, "-m", "node.cli", "devnet", "--port", str(port),
             "--l1-port", str(free_port())],
            cwd=ROOT, capture_output=True, timeout=120)
    out = (proc.stdout + proc.stderr).decode()
    assert proc.returncode == 1, out
    assert f"--port {port}: cannot listen on 127.0.0.1:{port} (Address already in use)" in out
    assert "Traceback" not in out and "ExceptionGroup" not in out


def test_l1_waits_for_its_port_then_gives_up_in_one_line() -> None:
    """The L1 process retries a bound port for --lock-wait seconds (an
    exiting L1 may still hold it): released in time it serves; held past
    the wait it exits 1 with one line, no traceback."""
    sock, port = _held_port()
    proc = subprocess.Popen([sys.executable, "-m", "l1_stub", "--port", str(port)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        time.sleep(1.5)
        assert proc.poll() is None
        sock.close()
        deadline = time.monotonic() + 10
        while True:
            try:
                reply = httpx.post(f"http://127.0.0.1:{port}", timeout=2, json={
                    "jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}).json()
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the L1 never listened"
                time.sleep(0.1)
        assert reply["result"] == hex(900)
    finally:
        proc.terminate()
        proc.communicate(timeout=30)

    sock, port = _held_port()
    with sock:
        done = subprocess.run([sys.executable, "-m", "l1_stub", "--port", str(port),
                               "--lock-wait", "1"], cwd=ROOT, capture_output=True, timeout=60)
    out = (done.stdout + done.stderr).decode()
    assert done.returncode == 1, out
    assert f"cannot listen on 127.0.0.1:{port}" in out and "Address already in use" in out
    assert "Traceback" not in out
