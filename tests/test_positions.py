"""Issue 8 item 7, the views: l2_getAccount's liquidationPrice and
marginRatioPpm against hand-computed values (a long, a short, an unlevered
long; without and with unsettled funding), the fill type in l2_getFill, a
block's receipts and a stream message, and `derivnet positions` against an
in-process node served over HTTP.

Scenario on the genesis ETH-USD market (pd 2, sd 4, so a size's value is
size x price base units; imf 10%, mmf 5%, maker fee 0.02%, taker 0.05%;
oracle 1666.00 = 166_600):
- LONG deposits 200 USDC and buys 1 ETH (10_000) at 1666.00 as the taker:
  collateral 200e6 - 1_666e6 - 833_000 (fee) = -1_466_833_000.
- SHORT deposits 200 USDC and sells it as the maker:
  collateral 200e6 + 1_666e6 - 333_200 (fee) = 1_865_666_800.
- RICH deposits 10,000 USDC and buys 0.1 ETH from RICH2: unlevered.
Block A holds these; block B two FundingTicks (premium 0 at now - 7200,
the market's first: no payment; premium 99_900 at now - 3600: rate 10% per
8 h for 3600 s, index + 100_000 x 166_600 x 3600 / 28_800 = 2_082_500_000),
so LONG owes ceil(10_000 x 2_082_500_000 / 10^6) = 20_825_000, SHORT is owed
20_825_000, unsettled (nothing touched the positions since).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import trio
from click.testing import CliRunner

from node.client import order_params
from node.node import Node, NodeConfig
from node.signing import Signer, dev_keys
from node.transactions import Deposit, Order

KEYS = dev_keys(10)
ORACLE = Signer(KEYS[1])
LONG, SHORT, RICH, RICH2 = (Signer(k) for k in KEYS[3:7])
ETH = 1
OWED = 20_825_000


def _hex(s: Signer) -> str:
    return "0x" + s.address.hex()


def call(node: Node, method: str, *params: Any) -> Any:
    out = json.loads(node.app.handle(json.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})))
    assert "error" not in out, out
    return out["result"]


def _order(node: Node, who: Signer, is_buy: bool, size: int, salt: int,
           tif: str = "GTC") -> dict[str, Any]:
    o = Order(who.address, ETH, is_buy, 166_600, size, salt, 2**40)
    return order_params(o, who.sign_order(node.chain.domain, o)[1], tif)


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    """Block A (deposits and fills), block B (funding ticks); the trades
    stream's messages in ``node.trades`` (an in-process connection)."""
    n = Node(NodeConfig(serve_l1=False))
    try:
        for i, (who, usdc) in enumerate([(LONG, 200), (SHORT, 200), (RICH, 10_000),
                                         (RICH2, 10_000)]):
            n.sequencer.include_deposit(Deposit(i, who.address, usdc * 10**6))
        n.sequencer.seal()
        conn = n.streams.connect()
        with conn.context():
            n.streams.l2_subscribe("trades", {"market": "ETH-USD"})
        call(n, "l2_sendOrder", _order(n, SHORT, False, 10_000, 1))
        call(n, "l2_sendOrder", _order(n, LONG, True, 10_000, 2, "IOC"))
        call(n, "l2_sendOrder", _order(n, RICH2, False, 1_000, 3))
        n.fill_hash = call(n, "l2_sendOrder", _order(n, RICH, True, 1_000, 4, "IOC"))[
            "fills"][0]["txHash"]  # type: ignore[attr-defined]
        n.block_a = n.sequencer.seal().number  # type: ignore[attr-defined, union-attr]
        now = int(time.time())
        for ts, premium in ((now - 7200, 0), (now - 3600, 99_900)):
            tick = ORACLE.funding_tick(n.chain.domain, ETH, ts, premium)
            n.sequencer.send_funding_tick(tick)
        n.sequencer.seal()
        frames = []
        while True:
            try:
                frames.append(json.loads(conn._receive.receive_nowait()))
            except trio.WouldBlock:
                break
        n.trades = [t for f in frames  # type: ignore[attr-defined]
                    for t in f["params"]["result"]["contents"].get("trades", [])]
        yield n
    finally:
        n.close()


def _position(account: dict[str, Any]) -> dict[str, Any]:
    (p,) = account["positions"]
    return p


def test_liquidation_price_and_margin_ratio_without_funding(node: Node) -> None:
    tag = hex(node.block_a)  # type: ignore[attr-defined]
    long = call(node, "l2_getAccount", _hex(LONG), tag)
    assert long["collateral"] == "-1466833000" and _position(long)["unsettledFunding"] == "0"
    # equity = mm x (P/P): -1_466_833_000 + 10_000 P = 0.05 x 10_000 P
    # -> P = ceil(1_466_833_000 / 9_500) = 154_404 (1544.04)
    assert _position(long)["liquidationPrice"] == "154404"
    # mm = 83_300_000, equity = 199_167_000: ceil(83.3e6 x 1e6 / 199_167_000)
    assert long["marginRatioPpm"] == "418242"
    short = call(node, "l2_getAccount", _hex(SHORT), tag)
    assert short["collateral"] == "1865666800"
    # 1_865_666_800 - 10_000 P = 0.05 x 10_000 P -> P = floor(1_865_666_800 / 10_500)
    assert _position(short)["liquidationPrice"] == "177682"
    assert short["marginRatioPpm"] == "417196"  # ceil(83.3e12 / 199_666_800)
    rich = call(node, "l2_getAccount", _hex(RICH), tag)
    assert _position(rich)["liquidationPrice"] is None  # collateral covers the long at 0
    assert rich["marginRatioPpm"] == str(-(-8_330_000 * 10**6 // int(rich["equity"])))
    empty = call(node, "l2_getAccount", "0x" + "ab" * 20)
    assert empty["marginRatioPpm"] == "0" and empty["positions"] == []


def test_unsettled_funding_moves_both_once(node: Node) -> None:
    long = call(node, "l2_getAccount", _hex(LONG))
    assert _position(long)["unsettledFunding"] == str(OWED)
    assert long["collateral"] == "-1466833000"  # not settled: nothing touched it
    assert long["equity"] == str(199_167_000 - OWED)
    # K = -1_466_833_000 - 20_825_000: P = ceil(1_487_658_000 / 9_500) = 156_596
    assert _position(long)["liquidationPrice"] == "156596"
    assert long["marginRatioPpm"] == "467081"  # ceil(83.3e12 / 178_342_000)
    short = call(node, "l2_getAccount", _hex(SHORT))
    assert _position(short)["unsettledFunding"] == str(-OWED)
    # K = 1_865_666_800 + 20_825_000: P = floor(1_886_491_800 / 10_500) = 179_665
    assert _position(short)["liquidationPrice"] == "179665"
    assert short["marginRatioPpm"] == "377792"  # ceil(83.3e12 / 220_491_800)


def test_fills_carry_their_type(node: Node) -> None:
    (fill,) = call(node, "l2_getFill", node.fill_hash)  # type: ignore[attr-defined]
    assert fill["type"] == "Fill" and fill["fillType"] == "limit"
    block = call(node, "l2_getBlockByNumber", hex(node.block_a), True)  # type: ignore[attr-defined]
    assert [f["fillType"] for f in block["fills"]] == ["limit", "limit"]
    assert [r["fillType"] for r in block["receipts"]] == ["limit", "limit"]
    receipt = call(node, "l2_getTransactionReceipt", node.fill_hash)  # type: ignore[attr-defined]
    assert receipt["fillType"] == "limit"
    deposits = call(node, "l2_getBlockByNumber", "0x1", True)
    assert {r["fillType"] for r in deposits["receipts"]} == {None}
    assert [t["fillType"] for t in node.trades] == ["limit", "limit"]  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def url(node: Node) -> Iterator[str]:
    """``node``'s JSON-RPC app served over HTTP (node.server) on a free port,
    in a trio thread; no node loops run."""
    from node.server import serve_jsonrpc
    from tests.devnet_process import free_port

    port = free_port()
    started = threading.Event()
    handle: list[Any] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_jsonrpc, node.app, "127.0.0.1", port)
            handle[:] = [trio.lowlevel.current_trio_token(), nursery.cancel_scope]
            started.set()

    thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
    thread.start()
    assert started.wait(30)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        trio.from_thread.run_sync(handle[1].cancel, trio_token=handle[0])
        thread.join(10)


def test_cli_positions_table_and_json(node: Node, url: str) -> None:
    from node.cli import main

    runner = CliRunner()
    out = runner.invoke(main, ["positions", _hex(LONG), "--rpc", url])
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())
    # symbol, side, size (ETH), entry, oracle, value, PnL, unsettled and settled funding
    # (USDC), liquidation price
    assert ("ETH-USD long 1.0000 1666.00 1666.00 1666.000000 0.000000 20.825000 0.000000 1565.96"
            in text), out.output
    # collateral, equity, initial / maintenance margin, free collateral, margin ratio %
    assert "-1466.833000 178.342000 166.600000 83.300000 11.742000 46.7081" in text, out.output
    raw = runner.invoke(main, ["positions", _hex(LONG).upper().replace("0X", "0x"),
                               "--rpc", url, "--json"])
    assert raw.exit_code == 0, raw.output
    assert json.loads(raw.output) == call(node, "l2_getAccount", _hex(LONG))
    none = runner.invoke(main, ["positions", "0x" + "ab" * 20, "--rpc", url])
    assert none.exit_code == 0 and "has no positions" in none.output


@pytest.mark.parametrize("address,rule", [
    ("0x1234", "expected 0x followed by 40 hex digits"),
    ("9965507D1a55bcC2695C58ba16FB37d819B0A4dc", "expected 0x followed by 40 hex digits"),
    ("0x9965507d1A55bcC2695C58ba16FB37d819B0A4dc", "fails its EIP-55 checksum"),
])
def test_cli_positions_bad_address_is_a_usage_error(address: str, rule: str) -> None:
    from node.cli import main

    out = CliRunner().invoke(main, ["positions", address])
    assert out.exit_code == 2 and rule in out.output, out.output


def test_client_settle_funding_and_liquidate(node: Node, url: str) -> None:
    """node/client.py's settle_funding moves LONG's unsettled funding into
    settledFunding (pending state; the sealed views above are untouched);
    NoPosition and a liquidation of a healthy account are -32003 naming the
    rule."""
    from node.client import L2Client, RpcError

    with L2Client(url) as client:
        assert client.settle_funding(LONG.address, "ETH-USD")["txHash"].startswith("0x")
        pos = client.get_account(LONG.address, "pending")["positions"][0]
        assert (pos["settledFunding"], pos["unsettledFunding"]) == (str(OWED), "0")
        with pytest.raises(RpcError) as info:
            client.settle_funding("0x" + "ab" * 20, ETH)
        assert info.value.code == -32003 and info.value.message.startswith("NoPosition")
        with pytest.raises(RpcError) as info:
            client.liquidate(RICH, LONG.address, "ETH-USD", True, 166_600, 10_000)
        assert info.value.message.startswith("NotLiquidatable")
