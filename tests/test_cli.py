"""The derivnet CLI against a devnet process: status, deposit, withdraw
(--warp) and escape, each with --json output."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from node.cli import main
from tests.devnet_process import DevnetProcess


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevnetProcess]:
    node = DevnetProcess(None, tmp_path_factory.mktemp("cli") / "devnet.log")
    node.start()
    try:
        yield node
    finally:
        node.stop()


def run(*args: str) -> dict:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_help_on_every_command() -> None:
    for cmd in ("devnet", "replay", "status", "deposit", "withdraw", "escape"):
        result = CliRunner().invoke(main, [cmd, "--help"])
        assert result.exit_code == 0 and "--help" in result.output


def test_deposit_withdraw_status(devnet: DevnetProcess) -> None:
    dep = run("deposit", "1000", "--account", "7", "--rpc", devnet.url, "--json")
    assert dep["included"] and dep["amount"] == "1000000000" and dep["index"].startswith("0x")
    out = run("withdraw", "400", "--account", "7", "--rpc", devnet.url, "--warp", "--timeout",
              "90", "--json")
    assert out["amount"] == "400000000" and out["l1_tx"].startswith("0x")
    assert out["withdrawal_id"] == "0x0" and out["batch"].startswith("0x")
    status = run("status", "--rpc", devnet.url, "--json")
    assert status["finalized_l2"]["number"] >= 1
    assert status["latest_batch"]["status"] in ("safe", "finalized")
    text = CliRunner().invoke(main, ["status", "--rpc", devnet.url])
    assert "unsafe_l2" in text.output and "latest batch" in text.output


def test_bad_amount_is_a_usage_error(devnet: DevnetProcess) -> None:
    result = CliRunner().invoke(main, ["deposit", "0.0000001", "--rpc", devnet.url])
    assert result.exit_code == 2 and "amount must be positive" in result.output


def test_withdrawal_id_reads_hex_as_json_prints_it() -> None:
    from node.cli import _QUANTITY

    assert [_QUANTITY.convert(v, None, None) for v in ("0x1f", "31", "0X1F", 7)] == [31, 31, 31, 7]
    result = CliRunner().invoke(main, ["withdraw", "--id", "0xzz"])
    assert result.exit_code == 2 and "not a decimal or 0x-hex integer" in result.output
