"""scripts/demo-liquidation end to end on an in-process devnet (its L1 in a
child process), with the ledger invariants checked after every block
(tests/invariants.py LedgerWatch): liquidations through the book, the
backstop liquidator with the insurance fund paying a shortfall, and a
deleverage, then every account at equity >= 0 or flat."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import trio
from rich.console import Console

ROOT = Path(__file__).resolve().parent.parent


def test_demo_liquidation() -> None:
    from node.node import Node, NodeConfig
    from tests.devnet_process import free_port
    from tests.invariants import watch_node

    sys.path.insert(0, str(ROOT / "scripts"))
    from demo_liquidation import demo  # type: ignore[import-not-found]

    node = Node(NodeConfig(port=free_port(), l1_port=free_port(), block_time=0.1,
                           batch_interval=0.5, funding_interval=0))
    try:
        watch = watch_node(node)
        out = io.StringIO()
        result: dict = {}

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                await nursery.start(node.run)
                result["summary"] = await trio.to_thread.run_sync(
                    demo, f"http://127.0.0.1:{node.config.port}",
                    Console(file=out, width=160))
                nursery.cancel_scope.cancel()

        trio.run(main)
        watch.assert_ok()

        def call(method: str, *params: object) -> dict:
            return json.loads(node.app.handle(json.dumps(
                {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})))

        ranking = call("l2_getDeleverageRanking", "ETH-USD")["result"]
        assert ranking["market"] == "0x1" and ranking["longs"] == []  # no profitable long is left
        assert [set(r) >= {"rank", "account", "pnl", "equity", "leveragePpm", "scorePpm"}
                for r in ranking["shorts"]] == [True, True]  # both shorts, ranked
        assert call("l2_getDeleverageRanking", "NOPE-USD")["error"]["data"] == {
            "rule": "UnknownMarket"}
        engine = call("l2_getRiskEngine")["result"]
        assert engine["enabled"] and int(engine["deleverages"], 16) == result["summary"].deleverages
        s = result["summary"]
        assert s.liquidations >= 1 and s.backstop_liquidations >= 1 and s.deleverages >= 1
        assert s.fund_high > 0 and s.fund_paid > 0 and s.funding_paid_by_longs > 0
        # the deleverage came when the fund could not cover a bankrupt account
        assert s.deleverage_shortfall > s.deleverage_fund >= 0
        assert watch.blocks > 10
        assert node.risk_engine is not None and node.risk_engine.counters.errors == 0
        assert "all checks passed" in out.getvalue()
    finally:
        node.close()


def test_backstop_funded_at_start_and_no_risk_engine_flag() -> None:
    """A new devnet queues the backstop liquidator's 1,000,000 USDC deposit
    on L1 at start (the sequencer's key by default); --no-risk-engine
    queues nothing and its views say the engine is off."""
    from node.crypto import address_of
    from node.node import Node, NodeConfig
    from tests.devnet_process import free_port

    for on in (True, False):
        node = Node(NodeConfig(serve_l1=False, port=free_port(), risk_engine=on))
        try:
            deposits = node.rollup.deposits(0, node.rollup.deposit_count())
            if on:
                assert [(d.account.lower(), d.amount) for d in deposits] == [
                    ("0x" + address_of(node.sequencer_key).hex(), Node.BACKSTOP_DEPOSIT)]
            else:
                assert deposits == [] and node.risk_engine is None
                answer = json.loads(node.app.handle(json.dumps(
                    {"jsonrpc": "2.0", "id": 1, "method": "l2_getDeleverageRanking",
                     "params": ["ETH-USD"]})))
                assert answer["error"]["code"] == -32004
        finally:
            node.close()
