"""``derivnet bots`` against a fresh devnet process: 2 makers and 2 takers
trade for 15 s; the fills the summary reports are the node's (counted again
from its blocks), and the summary's L1 root matches the L2 root of the
latest batch. Ctrl-C ends a run early with exit 0 and the summary."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import sys
import time
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from node.bots import BotAccount, MarketFeed, MarketMaker, MarketView
from node.cli import main
from node.client import L2Client, quantity
from node.signing import Signer, dev_keys
from tests.devnet_process import ROOT, DevnetProcess

MARKET = {"id": "0x1", "symbol": "ETH-USD", "priceDecimals": "0x2", "sizeDecimals": "0x4",
          "tickSize": "1", "stepSize": "1", "oraclePrice": "166600", "oracleTime": "0x0"}


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevnetProcess]:
    node = DevnetProcess(None, tmp_path_factory.mktemp("bots") / "devnet.log")
    node.start()
    try:
        yield node
    finally:
        node.stop()


def bots_cmd(devnet: DevnetProcess, *args: str) -> list[str]:
    return [sys.executable, "-m", "node.cli", "bots", "--rpc", devnet.url, "--no-dashboard",
            "--seed", "7", *args]


def env() -> dict[str, str]:
    # a wide terminal so the summary's rows are not wrapped
    return dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="200")


def row(output: str, name: str) -> str:
    """The value cell of summary row ``name``."""
    m = re.search(rf"│ {re.escape(name)}\s+│ (.+?)\s+│", output)
    assert m, f"no row {name!r} in:\n{output}"
    return m.group(1)


def test_bots_trade_and_settle(devnet: DevnetProcess) -> None:
    run = subprocess.run(bots_cmd(devnet, "--makers", "2", "--takers", "2", "--duration", "15"),
                         cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert "Traceback" not in out and "error" not in out.lower(), out
    # trading went on while it ran: the status lines' fill counts grow
    counts = [int(n) for n in re.findall(r"\] oracle .* fills (\d+) ", run.stdout)]
    assert len(counts) >= 4 and counts[-1] > counts[1] > 0, out
    assert row(out, "roots match") == "yes"
    fills = int(row(out, "fills"))
    first, last = map(int, re.search(r"\(#(\d+)\.\.#(\d+)\)", row(out, "L2 blocks")).groups())
    assert fills > 0 and "per fill" in row(out, "L1 gas")

    # the node's blocks hold those fills, all between the bots' accounts
    bots = {"0x" + Signer(k).address.hex() for k in dev_keys(10)[3:7]}
    with L2Client(devnet.url) as client:
        blocks = client.batch([("l2_getBlockByNumber", [hex(n), True])
                               for n in range(first, last + 1)])
        sealed = [f for b in blocks for f in b["fills"]]
        assert len(sealed) == fills
        assert all(f["maker"]["account"].lower() in bots and f["taker"]["account"].lower() in bots
                   for f in sealed)
        # the makers took their quotes off the book when they stopped
        book = client.call("l2_getOrderBook", "ETH-USD", 50)
        assert book["bids"] == [] and book["asks"] == []
        status = client.sync_status()
        assert status["safe_l2"]["number"] >= last
    # every bot's row: fills and no rejected orders
    for name in ("maker1", "maker2", "taker1", "taker2"):
        m = re.search(rf"│ {name}\s+│ \S+\s+│\s+(\d+) │\s+(\d+) │\s+(\d+) │", out)
        assert m, out
        assert int(m.group(3)) == 0, f"{name} had rejected orders:\n{out}"
    # each fill has two bots in it: a maker's quote and a taker (or another maker)
    assert sum(int(re.search(rf"│ {n}\s+│ \S+\s+│\s+(\d+) │", out).group(1))
               for n in ("maker1", "maker2", "taker1", "taker2")) == 2 * fills


def test_ctrl_c_ends_with_the_summary(devnet: DevnetProcess) -> None:
    proc = subprocess.Popen(bots_cmd(devnet, "--makers", "1", "--takers", "1", "--duration",
                                     "600", "--oracle", "tape"),
                            cwd=ROOT, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines = []
    deadline = time.monotonic() + 60
    # wait until it trades (a status line with fills), then interrupt
    for line in proc.stdout:
        lines.append(line)
        m = re.search(r"fills (\d+) ", line)
        if m and int(m.group(1)) > 0 or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=90)
    out = "".join(lines) + rest
    assert proc.returncode == 0, out
    assert "Traceback" not in out, out
    assert row(out, "roots match") == "yes"
    assert int(row(out, "fills")) > 0


def test_bad_options_are_one_line(devnet: DevnetProcess) -> None:
    result = CliRunner().invoke(main, ["bots", "--help"])
    assert result.exit_code == 0 and "--no-dashboard" in result.output
    result = CliRunner().invoke(main, ["bots", *bots_cmd(devnet, "--market", "DOGE-USD")[4:]])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: the node has no market DOGE-USD (see `derivnet markets`)"
    result = CliRunner().invoke(main, ["bots", "--makers", "5", "--takers", "3", "--rpc",
                                       devnet.url])
    assert result.exit_code == 1 and "at most 7 bots" in result.output


def test_quotes_skew_against_inventory() -> None:
    view = MarketView(dict(MARKET))
    me = BotAccount("maker1", Signer(dev_keys(10)[3]))
    mm = MarketMaker("http://127.0.0.1:1", view, me, stop=None,  # type: ignore[arg-type]
                     rng=None, levels=2, spread_bps=5, requote_bps=3,  # type: ignore[arg-type]
                     size=20_000, max_position=100_000)
    try:
        flat = mm.quotes(166_600, 0)
        long = mm.quotes(166_600, 100_000)
    finally:
        mm.client.close()
    bids = [p for b, p, _ in flat if b]
    asks = [p for b, p, _ in flat if not b]
    assert max(bids) < 166_600 < min(asks) and len(bids) == len(asks) == 2
    # a long maker quotes lower on both sides, to sell more than it buys
    assert max(p for b, p, _ in long if b) < max(bids)
    assert min(p for b, p, _ in long if not b) < min(asks)


def test_feed_folds_book_snapshot_and_deltas() -> None:
    view = MarketView(dict(MARKET))
    feed = MarketFeed("http://127.0.0.1:1", view, stop=None)  # type: ignore[arg-type]

    def env_(kind: str, contents: dict) -> dict:
        return {"channel": "orderbook", "type": kind, "id": "ETH-USD", "contents": contents}

    feed.apply(env_("snapshot", {"bids": [["166590", "100", "0x1"]],
                                 "asks": [["166610", "50", "0x1"], ["166620", "70", "0x1"]]}))
    feed.apply(env_("update", {"bids": [["166595", "30", "0x1"]],
                               "asks": [["166610", "0", "0x0"]]}))
    assert view.bids == {166590: 100, 166595: 30} and view.asks == {166620: 70}
    feed.apply({"channel": "markets", "type": "update", "id": None,
                "contents": {"markets": [{"id": 1, "symbol": "ETH-USD", "oraclePrice": "166700"}]}})
    assert view.oracle_price == 166700 and quantity(view.market["id"]) == 1


def test_feed_streams_and_polls_the_same_market(devnet: DevnetProcess) -> None:
    with L2Client(devnet.url) as client:
        market = next(m for m in client.call("l2_getMarkets") if m["symbol"] == "ETH-USD")
        me = BotAccount("taker1", Signer(dev_keys(10)[5]))
        polled, streamed = MarketView(market), MarketView(market)
        for view in (polled, streamed):
            view.bots[me.address] = BotAccount(me.name, me.signer)
        MarketFeed(devnet.url, polled, threading.Event())._poll_once()
        stop = threading.Event()
        feed = MarketFeed(devnet.url, streamed, stop)
        feed.start()
        try:
            deadline = time.monotonic() + 20
            while not (streamed.streaming and streamed.oracle_price
                       and streamed.bots[me.address].account):
                assert time.monotonic() < deadline, feed.error
                time.sleep(0.05)
        finally:
            stop.set()
            feed.join(timeout=5)
        assert feed.error is None
        assert streamed.oracle_price == polled.oracle_price == int(
            client.call("l2_getMarkets")[0]["oraclePrice"])
        assert (streamed.bots[me.address].account["address"]
                == polled.bots[me.address].account["address"] == me.address)
        assert polled.heads["unsafe"] >= 0 and set(polled.heads) == set(streamed.heads)


def test_dashboard_shows_book_trades_bots_and_heads() -> None:
    from io import StringIO

    from rich.console import Console

    from node.bots import Bots
    from node.bots_view import dashboard_view

    view = MarketView(dict(MARKET))
    view.oracle_price, view.bids, view.asks = 166600, {166590: 20_000}, {166610: 5_000}
    view.heads = {"unsafe": 12, "safe": 9, "finalized": 3}
    view.trades.append({"blockNumber": "0xc", "takerSide": "buy", "price": "166610",
                        "size": "2500"})
    me = BotAccount("maker1", Signer(dev_keys(10)[3]), start_equity=1_000_000_000)
    # sold 1 ETH at 1666.10 as a maker (fee 0.02%): the proceeds are collateral (cash model)
    me.account = {"collateral": "2665766780", "positions": [
        {"market": "0x1", "size": "-10000", "cost": "-1666100000", "oraclePrice": "166600"}]}
    view.bots[me.address] = me
    bots = Bots(None, None, view, None, [], [], None, None)  # type: ignore[arg-type]
    console = Console(file=StringIO(), width=200)
    console.print(dashboard_view(bots, 42))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    for shown in ("oracle 1666.00", "1665.90", "1666.10", "2.0000", "0.2500", "maker1",
                  "-1.0000", "unsafe #12", "safe #9", "finalized #3", "42 s left"):
        assert shown in text, (shown, text)
    # equity 2665.77 - 1 ETH at the oracle's 1666.00 = 999.77 USDC, 1,000 at the start
    assert "-0.23" in text
