"""The live terminal view of ``derivnet bots`` (rich): the dashboard, the
``--no-dashboard`` status line and the end-of-run summary tables. Prices
and sizes are shown in quote / base units (the market's decimals), money
in USDC."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from node.bots import Bots, position_of
from node.client import quantity


def _dec(value: int, decimals: int) -> str:
    return f"{Decimal(value).scaleb(-decimals):f}"


def _usd(base_units: int) -> str:
    return f"{Decimal(base_units).scaleb(-6).quantize(Decimal('0.01')):,}"


def dashboard_view(bots: Bots, remaining: float) -> Any:
    """A rich renderable of the live market: book, recent trades, bots, heads."""
    from rich.columns import Columns
    from rich.console import Group
    from rich.table import Table

    v = bots.view
    pd, sd = quantity(v.market["priceDecimals"]), quantity(v.market["sizeDecimals"])
    with v.lock:
        bids = sorted(v.bids.items(), reverse=True)[:8]
        asks = sorted(v.asks.items())[:8]
        trades = list(v.trades)[:10]
        heads = dict(v.heads)
        oracle = v.oracle_price
        accounts = [(b, dict(b.account)) for b in v.bots.values()]
    book = Table(title=f"{v.market['symbol']} book (oracle {_dec(oracle, pd)})")
    book.add_column("bid size", justify="right")
    book.add_column("bid", justify="right", style="green")
    book.add_column("ask", justify="right", style="red")
    book.add_column("ask size", justify="right")
    for i in range(max(len(bids), len(asks))):
        b = bids[i] if i < len(bids) else None
        a = asks[i] if i < len(asks) else None
        book.add_row(_dec(b[1], sd) if b else "", _dec(b[0], pd) if b else "",
                     _dec(a[0], pd) if a else "", _dec(a[1], sd) if a else "")
    tape = Table(title="recent trades")
    tape.add_column("block", justify="right")
    tape.add_column("side")
    tape.add_column("price", justify="right")
    tape.add_column("size", justify="right")
    for t in trades:
        tape.add_row(str(quantity(t["blockNumber"])), t["takerSide"],
                     _dec(int(t["price"]), pd), _dec(int(t["size"]), sd),
                     style="green" if t["takerSide"] == "buy" else "red")
    table = Table(title="bots")
    for col in ("bot", "position", "PnL (USDC)", "orders", "rejected"):
        table.add_column(col, justify="left" if col == "bot" else "right")
    for b, acc in accounts:
        table.add_row(b.name, _dec(position_of(acc, v.market_id), sd),
                      _usd(v.equity(acc) - b.start_equity), str(b.orders_sent), str(b.errors))
    status = (f"heads: unsafe #{heads['unsafe']}  safe #{heads['safe']}  finalized "
              f"#{heads['finalized']}   fills {v.fills_seen}   "
              f"{'streams' if v.streaming else 'polling'}   {remaining:.0f} s left")
    return Group(Columns([book, tape, table]), status)


def status_line(bots: Bots, elapsed: float) -> str:
    """One line for --no-dashboard."""
    v = bots.view
    pd = quantity(v.market["priceDecimals"])
    with v.lock:
        bid = max(v.bids, default=None)
        ask = min(v.asks, default=None)
        heads = dict(v.heads)
        oracle = v.oracle_price
        fills = v.fills_seen
    errs = sum(b.errors for b in v.bots.values())
    return (f"[{elapsed:5.1f} s] oracle {_dec(oracle, pd)} bid {_dec(bid, pd) if bid else '-'} "
            f"ask {_dec(ask, pd) if ask else '-'} fills {fills} heads unsafe #{heads['unsafe']} "
            f"safe #{heads['safe']} finalized #{heads['finalized']} rejected orders {errs}")


def print_summary(summary: dict[str, Any]) -> None:
    """The end-of-run summary as rich tables."""
    from rich.console import Console
    from rich.table import Table

    sd = quantity(summary["sizeDecimals"])
    console = Console()
    table = Table(title=f"derivnet bots on {summary['market']}", show_header=False)
    for k, v in [
        ("fills", summary["fills"]),
        ("volume", f"{_dec(int(summary['volume']), sd)} ({_usd(int(summary['volumeUsdc']))} USDC)"),
        ("oracle updates", f"{summary['oracleUpdates']} ({summary['oracleRejected']} rejected)"),
        ("L2 blocks", f"{summary['blocks']} (#{summary['firstBlock']}..#{summary['lastBlock']})"),
        ("L1 batches", summary["batches"]),
        ("L1 gas", f"{summary['l1GasUsed']:,} ({summary['l1GasPerFill']} per fill)"),
        ("L1 calldata", f"{summary['l1CalldataBytes']:,} bytes "
                        f"({summary['calldataBytesPerFill']} per fill)"),
        ("trading", f"{summary['tradingSeconds']} s ({summary['fillsPerSecond']} fills/s)"),
        ("L2 state root at latest batch", summary["l2StateRootAtLatestBatch"]),
        ("L1 Rollup latest root", summary["l1StateRoot"]),
        ("roots match", "yes" if summary["rootsMatch"] else "NO"),
    ]:
        table.add_row(k, str(v))
    console.print(table)
    bots = Table(title="bots")
    for col in ("bot", "address", "fills", "orders", "rejected", "position", "PnL (USDC)"):
        bots.add_column(col, justify="left" if col in ("bot", "address") else "right")
    for b in summary["bots"]:
        bots.add_row(b["bot"], b["address"], str(b["fills"]), str(b["orders"]), str(b["errors"]),
                     _dec(int(b["position"]), sd), _usd(int(b["pnl"])))
    console.print(bots)
    for e in summary["errors"]:
        console.print(f"[yellow]last rejection of {e}[/yellow]")
