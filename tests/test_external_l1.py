"""Any Ethereum node as the L1 (l1_stub.external.ExternalL1, ``derivnet devnet
--l1-rpc``): mining and time on a hardhat node from npm in both mining modes,
clear errors for a node without (or refusing) the dev controls, the CLI's
one-line errors for a wrong key, chain or URL, and attaching to a Rollup
already on the node (--l1-rollup). The settlement flows on
hardhat are in tests/test_settlement.py."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from l1_stub.client import Deployment, RollupClient, connect
from l1_stub.external import ExternalL1, L1ControlRefused, L1MethodMissing
from l1_stub.process import L1Process
from node.cli import main
from node.client import L2Client, RpcError
from node.signing import Signer, dev_keys
from node.wallet import deposit, rollup_client
from tests.devnet_process import DevnetProcess, free_port
from tests.hardhat_node import HardhatNode, HardhatUnavailable, install


@pytest.fixture(scope="module")
def hardhat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HardhatNode]:
    try:
        home = install()
    except HardhatUnavailable as exc:
        pytest.skip(str(exc))
    node = HardhatNode(home, tmp_path_factory.mktemp("hardhat") / "hardhat.log")
    node.start()
    try:
        yield node
    finally:
        node.stop()


def test_mining_and_time_on_hardhat(hardhat: HardhatNode) -> None:
    with ExternalL1(hardhat.url, chain_id=900) as l1:
        assert l1.client_version.startswith("HardhatNetwork/")
        assert l1.dev_keys == dev_keys(10)
        # automine (hardhat's default): the clock step only reads the head
        assert l1.automine()
        start = l1.head()[0]
        assert l1.tick() == start == l1.head()[0]
        assert l1.mine() == start + 1 and l1.mine(3) == start + 4  # on demand: mines
        # manual mining: the clock step mines one block
        l1.w3.provider.make_request("evm_setAutomine", [False])  # type: ignore[arg-type]
        try:
            assert not l1.automine()
            assert l1.tick() == start + 5 == l1.head()[0]
        finally:
            l1.w3.provider.make_request("evm_setAutomine", [True])  # type: ignore[arg-type]
        # a warp moves the offset at once, and the next block's timestamp
        before = l1.time_offset
        assert l1.increase_time(3_600) >= before + 3_600
        l1.mine()
        assert l1.head()[1] >= int(time.time()) + 3_600 - 2
        assert l1.time_offset >= 3_600 and abs(l1.now() - l1.head()[1]) <= 5
        with pytest.raises(ValueError, match="backwards"):
            l1.increase_time(-1)
        # a method the node lacks: -32601 naming it and the node
        with pytest.raises(L1MethodMissing, match=f"{hardhat.url} has no evm_noSuchControl"):
            l1._control("evm_noSuchControl")


def test_wrong_chain_id_is_refused(hardhat: HardhatNode) -> None:
    with pytest.raises(ValueError, match="is chain 900, but genesis expects l1ChainId 31337"):
        ExternalL1(hardhat.url, chain_id=31337)


def test_cli_one_line_errors(hardhat: HardhatNode) -> None:
    port = str(free_port())
    wrong = "0x" + dev_keys(2)[1].hex()  # account 1: not the genesis sequencer
    result = CliRunner().invoke(main, ["devnet", "--port", port, "--l1-rpc", hardhat.url,
                                       "--l1-key", wrong])
    assert result.exit_code == 1
    assert "--sequencer-key (--l1-key) is for 0x7099" in result.output
    assert "genesis names 0xf39f" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(main, ["devnet", "--port", port, "--l1-key", wrong])
    assert result.exit_code == 2 and "only applies with --l1-rpc" in result.output
    nobody = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(main, ["devnet", "--port", port, "--l1-rpc", nobody])
    assert result.exit_code == 1 and f"no Ethereum node answering at {nobody}" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_devnet_on_a_node_that_refuses_warps(tmp_path: Path) -> None:
    """An L1 node (derivnet's own, --no-devnet-controls, mining only when
    asked) that refuses evm_increaseTime: the devnet mines it on its L1
    clock (a deposit is included), and devnet_increaseTime on the L2
    answers an error that names the method and the node."""
    with L1Process(port=0, extra_args=("--no-devnet-controls",)) as l1:
        node = DevnetProcess(None, tmp_path / "devnet.log", **{"--l1-rpc": l1.url})
        node.start()
        try:
            with L2Client(node.url) as client, connect(l1.url) as w3:
                assert client.config["l1_rpc_url"] == l1.url
                bob = Signer(dev_keys(7)[6])
                deposit(client, w3, bob, 5 * 10**6, timeout=30)
                assert client.get_account(bob.address)["collateral"] == str(5 * 10**6)
                with pytest.raises(RpcError, match=f"{l1.url} refused evm_increaseTime"):
                    client.call("devnet_increaseTime", 60)
                assert client.call("devnet_mine", 1)  # plain evm_mine stays open
        finally:
            node.stop()


def test_refused_and_missing_are_json_rpc_errors() -> None:
    missing = L1MethodMissing("http://l1", "evm_increaseTime", "Method not found")
    refused = L1ControlRefused("http://l1", "evm_increaseTime", "disabled")
    assert missing.code == -32601 and "http://l1 has no evm_increaseTime" in missing.message
    assert refused.code == -32000 and "refused evm_increaseTime: disabled" in refused.message


def test_attach_to_a_rollup_on_the_node(hardhat: HardhatNode, tmp_path: Path) -> None:
    """--l1-rollup: a second devnet takes over the Rollup a first one
    deployed (no batches yet), deposits and batches flow; a Rollup with
    batches, or a flag that differs from the contract, is refused."""
    first = DevnetProcess(None, tmp_path / "first.log", **{"--l1-rpc": hardhat.url})
    first.start()
    try:
        with L2Client(first.url) as client:
            deployed = client.config
    finally:
        first.stop()
    rollup = deployed["rollup_address"]
    port = str(free_port())
    result = CliRunner().invoke(main, ["devnet", "--port", port, "--l1-rpc", hardhat.url,
                                       "--l1-rollup", rollup, "--challenge-window", "5"])
    assert result.exit_code == 1
    assert "--challenge-window 5 differs from the Rollup's 60" in result.output

    second = DevnetProcess(None, tmp_path / "second.log",
                           **{"--l1-rpc": hardhat.url, "--l1-rollup": rollup})
    second.start()
    try:
        with L2Client(second.url) as client, connect(hardhat.url) as w3:
            config = client.config
            for key in ("rollup_address", "usdc_address", "dispute_game_address",
                        "challenge_window", "escape_delay", "clock", "proposer_bond"):
                assert config[key] == deployed[key], key
            alice = Signer(dev_keys(6)[5])
            deposit(client, w3, alice, 100 * 10**6)
            assert client.get_account(alice.address)["collateral"] == str(100 * 10**6)
            rollup_l1 = rollup_client(client, w3)
            deadline = time.monotonic() + 30
            while rollup_l1.batch_count() == 0:
                assert time.monotonic() < deadline, "no batch on L1"
                time.sleep(0.1)
    finally:
        second.stop()
    with connect(hardhat.url) as w3:  # the second devnet may have posted more than one
        batches = RollupClient(w3, Deployment(
            deployed["usdc_address"], rollup, deployed["genesis"]["l1"]["number"],
            deployed["l1_chain_id"])).batch_count()
    result = CliRunner().invoke(main, ["devnet", "--port", port, "--l1-rpc", hardhat.url,
                                       "--l1-rollup", rollup])
    assert result.exit_code == 1 and f"holds {batches} batches" in result.output
