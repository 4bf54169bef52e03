"""JSON-RPC views of the sequencer's risk engine (sequencer/risk_engine.py):
``l2_getRiskEngine`` and ``l2_getDeleverageRanking``, registered by the node
next to ``L2Api``'s methods (docs/protocol.md "Risk engine (sequencer
policy)")."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from node.rpc import RpcError, unknown_market

if TYPE_CHECKING:  # pragma: no cover
    from node.node import Node

RISK_ENGINE_OFF = -32004
"""JSON-RPC error code of ``l2_getDeleverageRanking`` on a node without the
risk engine (``--no-risk-engine``, or a replica)."""


def risk_methods(node: Node) -> dict[str, Callable[..., Any]]:
    """{method name: function} of the two views over ``node.risk_engine``."""

    def get_risk_engine() -> dict[str, Any]:
        """The engine's counters: ``{enabled, due (work waiting for the next
        step), backstopLiquidator,
        accountsWatched, checks, liquidatedAccounts, liquidations,
        backstopLiquidations, deleverages, rejected, rejectedByRule,
        indexRebuilds, errors, lastError}`` (``{enabled: false}`` when off)."""
        engine = getattr(node, "risk_engine", None)
        if engine is None:
            return {"enabled": False}
        return engine.view()

    def get_deleverage_ranking(market: Any) -> dict[str, Any]:
        """The auto-deleveraging ranking of ``market`` (id or symbol) on the
        pending state: ``{market, oraclePrice, insuranceFund, shorts, longs}``,
        ``shorts`` the offsets of a liquidated long, ``longs`` of a
        liquidated short, best first, each ``{rank, account, size, value,
        cost, unsettledFunding, pnl, equity, pnlRatioPpm, leveragePpm,
        scorePpm}`` (money in USDC base units; score = pnl ratio x
        leverage, node/risk.py ``adl_score``). Errors: UnknownMarket
        (-32003), -32004 when the risk engine is off."""
        engine = getattr(node, "risk_engine", None)
        market_id = node.api._market_id(market)
        if market_id not in node.chain.state.markets:
            raise unknown_market(f"market {market_id} is not listed")
        if engine is None:
            raise RpcError(RISK_ENGINE_OFF, "the risk engine is off (--no-risk-engine)")
        return engine.ranking_view(market_id)

    return {"l2_getRiskEngine": get_risk_engine,
            "l2_getDeleverageRanking": get_deleverage_ranking}
