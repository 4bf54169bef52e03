"""Demo of the risk engine: leveraged longs and shorts on ETH-USD, the oracle
falls 25% in six hourly steps (time warps, a FundingTick each: longs pay
funding), and the sequencer's risk engine liquidates through the book, then
with the backstop liquidator (the insurance fund pays a shortfall), then
deleverages against the most profitable short once the fund cannot cover a
bankrupt account. It ends by checking that every account has equity >= 0
or no position and that the ledger invariants hold; exit 1 if not.

    scripts/demo-liquidation              # starts its own devnet (funding clock off)
    scripts/demo-liquidation --rpc URL    # uses a running devnet (fresh accounts each run)

The scenario's accounts are new keys (derived from the run's start time),
given L1 ether by dev account 3 and USDC through the L1 deposit queue, so
the demo can run again on the same devnet. The oracle is dev account 1.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from l1_stub.client import connect, send_transaction, wait_receipt  # noqa: E402
from node.client import L2Client, RpcError, quantity  # noqa: E402
from node.crypto import keccak  # noqa: E402
from node.replay import fund_accounts  # noqa: E402
from node.signing import Signer, dev_keys  # noqa: E402

USDC = 10**6
ETH_UNIT = 10_000  # size units of 1 ETH (ETH-USD: 4 size decimals)
MARKET = "ETH-USD"
START_PRICE = 200_000  # 2000.00 (2 price decimals)
STEPS = (  # (oracle price, maker's bids: "near" 0.1% under the oracle or "thin" 10% under)
    (195_000, "near"), (190_000, "near"), (183_000, "near"),
    (174_000, "thin"), (170_000, "thin"), (150_000, "near"),
)
WARP_SECONDS = 3_600  # L2 time per step: each FundingTick pays for an hour
PREMIUM_PPM = 20_000  # the ticks' premium: perp 2% over the index, longs pay


class DemoFailed(AssertionError):
    """A check of the demo failed (the message says which)."""


@dataclass
class Trader:
    name: str
    signer: Signer
    deposit: int  # USDC base units

    @property
    def address(self) -> str:
        return "0x" + self.signer.address.hex()


@dataclass
class Summary:
    liquidations: int = 0
    backstop_liquidations: int = 0
    deleverages: int = 0
    fund_high: int = 0
    fund_end: int = 0
    fund_paid: int = 0  # the largest drop of the fund in one step
    funding_paid_by_longs: int = 0
    # at the first deleverage, before its block: the insurance fund and the
    # bankrupt account's shortfall (-equity) it could not cover (USDC units)
    deleverage_fund: int | None = None
    deleverage_shortfall: int | None = None
    accounts_checked: int = 0
    blocks_checked: int = 0
    events: list[str] = field(default_factory=list)


def traders(seed: bytes) -> dict[str, Trader]:
    """The scenario's accounts (fresh keys from ``seed``) and deposits."""
    def key(name: str) -> Signer:
        return Signer(keccak(b"derivnet demo-liquidation " + seed + name.encode()))

    spec = [("maker", 1_000_000), ("long-book", 1_250), ("long-backstop", 300),
            ("long-adl", 860), ("short-big", 2_000), ("short-small", 2_000)]
    return {name: Trader(name, key(name), usdc * USDC) for name, usdc in spec}


class Scenario:
    """One run against the devnet at ``client`` (its L1 at ``w3``)."""

    def __init__(self, client: L2Client, w3: Any, console: Console,
                 wait: Callable[[float], None] = time.sleep) -> None:
        self.client = client
        self.w3 = w3
        self.out = console
        self.sleep = wait
        self.oracle = Signer(dev_keys(2)[1])
        self.offset = 0  # L2 time warp so far (s)
        self.salt = int(time.time() * 1000)
        self.maker_orders: list[bytes] = []
        self.summary = Summary()
        self.t = traders(str(time.time_ns()).encode())
        self.last_block = 0

    # -- helpers -------------------------------------------------------------
    def now(self) -> int:
        return int(time.time()) + self.offset

    def order(self, who: str, is_buy: bool, price: int, size: int, tif: str = "GTC") -> Any:
        self.salt += 1
        return self.client.send_order(self.t[who].signer, MARKET, is_buy, price, size, tif,
                                      salt=self.salt, expiry=self.now() + 10 * 86_400)

    def account(self, who: str) -> dict[str, Any]:
        return self.client.get_account(self.t[who].address, "latest")

    def fund(self) -> int:
        return int(self.client.call("l2_getSystem", "latest").get("insuranceFund", 0))

    def engine(self) -> dict[str, Any]:
        return dict(self.client.call("l2_getRiskEngine"))

    def settle(self, timeout: float = 20.0) -> None:
        """Wait until nothing is pending and the risk engine has no work,
        twice in a row (its transactions sealed)."""
        deadline = time.monotonic() + timeout
        quiet = 0
        while quiet < 2:
            if time.monotonic() > deadline:
                raise DemoFailed("the devnet did not settle (pending transactions or "
                                 "risk engine work) in time")
            idle = (self.client.sync_status()["pending_txs"] == 0
                    and not self.engine().get("due", False))
            quiet = quiet + 1 if idle else 0
            self.sleep(0.15)

    def setup(self) -> None:
        out = self.out
        out.rule("[bold]derivnet demo: liquidations, insurance fund, deleveraging")
        funder = dev_keys(4)[3]
        hashes = [send_transaction(self.w3, funder, to=self.w3.to_checksum_address(t.address),
                                   gas=21_000, value=10**18) for t in self.t.values()]
        for h in hashes:
            wait_receipt(self.w3, h, timeout=60)
        fund_accounts(self.client, self.w3,
                      [(t.signer, t.deposit) for t in self.t.values()], 120.0)
        table = Table("account", "address", "deposit (USDC)", title="funded through L1 deposits")
        for t in self.t.values():
            table.add_row(t.name, t.address, f"{t.deposit / USDC:,.0f}")
        out.print(table)
        # the oracle at 2000.00 and a first FundingTick (a market's first tick pays nothing)
        self.client.send_oracle_price(self.oracle, MARKET, START_PRICE, self.now())
        self.tick()
        self.order("short-big", False, START_PRICE, 5 * ETH_UNIT)
        self.order("short-small", False, START_PRICE, 3 * ETH_UNIT)
        for who, eth in (("long-book", 5), ("long-backstop", 1), ("long-adl", 2)):
            r = self.order(who, True, START_PRICE, eth * ETH_UNIT, "IOC")
            if r["status"] != "filled":
                raise DemoFailed(f"{who}'s opening buy was not filled: {r}")
        self.settle()
        self.last_block = self.client.block_number()
        self.show("opened at 2000.00: longs 5x-8x, shorts ~5x", START_PRICE)

    def tick(self) -> None:
        """A FundingTick stamped now (L2 time), retried while the node's clock
        has not caught up with the warp yet (FundingTickInFuture)."""
        for _ in range(30):
            try:
                self.client.send_funding_tick(self.oracle, MARKET, PREMIUM_PPM, self.now())
                return
            except RpcError as exc:
                if "FundingTickInFuture" in str(exc):
                    self.sleep(0.2)
                    continue
                # e.g. StaleFundingTick: a devnet's own funding clock ticked first
                self.out.print(f"[dim]funding tick not taken ({exc})[/dim]")
                return
        raise DemoFailed("the node's clock never reached the warped time")

    def quote(self, price: int, mode: str) -> None:
        """The maker cancels its quotes and rests a bid (6 ETH) 0.1% ("near")
        or 10% ("thin") under ``price`` and an ask 0.5% over it."""
        for h in self.maker_orders:
            try:
                self.client.cancel_order(self.t["maker"].signer, h)
            except RpcError:  # filled by a liquidation in the meantime
                pass
        bid = price * (999 if mode == "near" else 900) // 1000
        ask = price * 1005 // 1000
        self.maker_orders = [bytes.fromhex(self.order("maker", True, bid, 6 * ETH_UNIT)
                                           ["orderHash"][2:]),
                             bytes.fromhex(self.order("maker", False, ask, ETH_UNIT)
                                           ["orderHash"][2:])]

    def step(self, n: int, price: int, mode: str) -> None:
        self.offset = quantity(self.client.call("devnet_increaseTime", WARP_SECONDS))
        self.sleep(0.3)
        self.tick()
        self.quote(price, mode)
        fund_before = self.fund()
        self.client.send_oracle_price(self.oracle, MARKET, price, self.now())
        self.settle()
        fund_after = self.fund()
        self.summary.fund_high = max(self.summary.fund_high, fund_after)
        self.summary.fund_paid = max(self.summary.fund_paid, fund_before - fund_after)
        self.events()
        book = "maker bids 0.1% under" if mode == "near" else "thin book: bids 10% under"
        self.show(f"step {n}: +{WARP_SECONDS // 60} min, oracle {price / 100:,.2f} ({book})",
                  price)

    def events(self) -> None:
        """Print the engine's transactions sealed since the last look."""
        head = self.client.block_number()
        for number in range(self.last_block + 1, head + 1):
            block = self.client.call("l2_getBlockByNumber", hex(number), True)
            for tx, receipt in zip(block["transactions"], block["receipts"], strict=True):
                kind = tx.get("type")
                if kind not in ("Liquidate", "Deleverage") or receipt["status"] != "0x1":
                    continue
                names = {t.address: t.name for t in self.t.values()}
                who = names.get(str(tx.get("liquidated", "")).lower(), tx.get("liquidated"))
                if kind == "Liquidate":
                    order = tx.get("maker") or {}  # the liquidator's order
                    by = names.get(str(order.get("account", "")).lower(), "backstop liquidator")
                    text = (f"Liquidate {who}: {int(tx['size']) / ETH_UNIT:g} ETH at "
                            f"{int(tx['price']) / 100:,.2f} to {by}")
                else:
                    off = names.get(str(tx.get("offset", "")).lower(), tx.get("offset"))
                    fund, shortfall = self.before_deleverage(tx["liquidated"], number)
                    text = (f"Deleverage {who}: {int(tx['size']) / ETH_UNIT:g} ETH at "
                            f"{int(tx['price']) / 100:,.2f} (bankruptcy price) against {off}; "
                            f"the insurance fund ({fund / USDC:,.2f} USDC) could not cover "
                            f"its shortfall ({shortfall / USDC:,.2f} USDC)")
                    if self.summary.deleverage_fund is None:
                        self.summary.deleverage_fund = fund
                        self.summary.deleverage_shortfall = shortfall
                self.summary.events.append(text)
                self.out.print(f"  [yellow]{text}[/yellow]")
        self.last_block = head

    def before_deleverage(self, liquidated: str, number: int) -> tuple[int, int]:
        """The insurance fund and ``liquidated``'s shortfall (-equity, 0 if
        solvent) at the end of L2 block ``number - 1`` (USDC units)."""
        at = hex(number - 1)
        fund = int(self.client.call("l2_getSystem", at).get("insuranceFund", 0))
        equity = int(self.client.get_account(liquidated, at)["equity"])
        return fund, max(0, -equity)

    def show(self, title: str, price: int) -> None:
        table = Table("account", "ETH", "collateral", "equity", "funding paid", "liq. price",
                      title=title)
        longs_paid = 0
        rows = [(t.name, self.account(t.name)) for t in self.t.values()]
        backstop = self.engine().get("backstopLiquidator")
        if backstop:
            rows.append(("backstop", self.client.get_account(backstop, "latest")))
        for name, a in rows:
            pos = next((p for p in a["positions"] if p.get("symbol") == MARKET), None)
            paid = 0
            if pos is not None:
                paid = int(pos.get("settledFunding", 0)) + int(pos.get("unsettledFunding", 0))
                if name.startswith("long"):
                    longs_paid += paid
            liq = pos and pos.get("liquidationPrice")
            table.add_row(name, f"{int(pos['size']) / ETH_UNIT:+g}" if pos else "-",
                          f"{int(a['collateral']) / USDC:,.2f}",
                          f"{int(a['equity']) / USDC:,.2f}", f"{paid / USDC:,.2f}",
                          f"{int(liq) / 100:,.2f}" if liq else "-")
        self.out.print(table)
        # funding paid so far on open positions (a closed position's is not in state)
        self.summary.funding_paid_by_longs = max(self.summary.funding_paid_by_longs, longs_paid)
        e = {k: int(v, 16) for k, v in self.engine().items()
             if k in ("liquidations", "backstopLiquidations", "deleverages", "accountsWatched")}
        self.out.print(f"  insurance fund {self.fund() / USDC:,.2f} USDC; risk engine: "
                       f"{e.get('liquidations')} book liquidations, "
                       f"{e.get('backstopLiquidations')} backstop, {e.get('deleverages')} "
                       f"deleverages, {e.get('accountsWatched')} accounts watched")

    # -- the checks ------------------------------------------------------------
    def check(self) -> None:
        """Every account has equity >= 0 or no position; per market the
        sizes sum to 0 (and the longs to the open interest); collateral +
        funding pool + insurance fund == deposits - withdrawals, exactly."""
        c = self.client
        head = c.block_number()
        accounts: set[str] = set()
        deposits = withdrawn = 0
        for number in range(1, head + 1):
            block = c.call("l2_getBlockByNumber", hex(number), True)
            for tx, receipt in zip(block["transactions"], block["receipts"], strict=True):
                if receipt["status"] != "0x1":
                    continue
                _addresses(tx, accounts)
                if tx.get("type") == "Deposit":
                    deposits += int(tx["amount"])
                elif tx.get("type") == "Withdraw":
                    withdrawn += int(tx["amount"])
        system = c.call("l2_getSystem", hex(head))
        accounts.add(system["feeAccount"].lower())
        collateral = 0
        sizes: dict[str, int] = {}
        longs: dict[str, int] = {}
        for address in sorted(accounts):
            a = c.call("l2_getAccount", address, hex(head))
            collateral += int(a["collateral"])
            if a["positions"] and int(a["equity"]) < 0:
                raise DemoFailed(f"{address} has equity {a['equity']} < 0 and a position")
            for p in a["positions"]:
                sizes[p["market"]] = sizes.get(p["market"], 0) + int(p["size"])
                longs[p["market"]] = longs.get(p["market"], 0) + max(int(p["size"]), 0)
        for market, total in sizes.items():
            if total != 0:
                raise DemoFailed(f"market {market}: position sizes sum to {total}, not 0")
        for m in c.call("l2_getMarkets", hex(head)):
            oi = m.get("openInterest")
            if oi is not None and int(oi) != longs.get(m["id"], 0):
                raise DemoFailed(f"market {m['id']}: open interest {oi} != sum of longs "
                                 f"{longs.get(m['id'], 0)}")
        pool = int(system["fundingPool"])
        fund = int(system.get("insuranceFund", 0))
        if fund < 0:
            raise DemoFailed(f"insurance fund {fund} < 0")
        if collateral + pool + fund != deposits - withdrawn:
            raise DemoFailed(f"ledger: collateral {collateral} + funding pool {pool} + insurance "
                             f"fund {fund} != deposits {deposits} - withdrawals {withdrawn}")
        self.summary.accounts_checked = len(accounts)
        self.summary.blocks_checked = head

    def run(self) -> Summary:
        self.setup()
        for n, (price, mode) in enumerate(STEPS, 1):
            self.step(n, price, mode)
        s = self.summary
        e = self.engine()
        s.liquidations = int(e.get("liquidations", "0x0"), 16)
        s.backstop_liquidations = int(e.get("backstopLiquidations", "0x0"), 16)
        s.deleverages = int(e.get("deleverages", "0x0"), 16)
        s.fund_end = self.fund()
        self.check()
        failures = []
        if s.liquidations < 1:
            failures.append("no liquidation through the book")
        if s.backstop_liquidations < 1:
            failures.append("no backstop liquidation")
        if s.deleverages < 1:
            failures.append("no deleverage")
        elif not (s.deleverage_shortfall or 0) > (s.deleverage_fund or 0):
            failures.append(f"the first deleverage's shortfall {s.deleverage_shortfall} does "
                            f"not exceed the insurance fund {s.deleverage_fund}")
        if s.fund_high <= 0:
            failures.append("the insurance fund never grew")
        if s.fund_paid <= 0:
            failures.append("the insurance fund never paid a shortfall")
        if s.funding_paid_by_longs <= 0:
            failures.append("the longs paid no funding")
        table = Table("", "", title="summary")
        for label, value in (
                ("liquidations through the book", s.liquidations),
                ("backstop liquidations", s.backstop_liquidations),
                ("deleverages", s.deleverages),
                ("insurance fund high (USDC)", f"{s.fund_high / USDC:,.2f}"),
                ("largest payment by the fund (USDC)", f"{s.fund_paid / USDC:,.2f}"),
                ("insurance fund before the first deleverage (USDC)",
                 f"{(s.deleverage_fund or 0) / USDC:,.2f}"),
                ("shortfall it could not cover (USDC)",
                 f"{(s.deleverage_shortfall or 0) / USDC:,.2f}"),
                ("insurance fund at the end (USDC)", f"{s.fund_end / USDC:,.2f}"),
                ("funding the longs paid (USDC)", f"{s.funding_paid_by_longs / USDC:,.2f}"),
                ("accounts checked: equity >= 0 or flat", s.accounts_checked),
                ("invariants (sizes, open interest, ledger)", f"hold at block {s.blocks_checked}")):
            table.add_row(label, str(value))
        self.out.print(table)
        if failures:
            raise DemoFailed("; ".join(failures))
        self.out.print("[green]all checks passed[/green]")
        return s


def _addresses(obj: Any, out: set[str]) -> None:
    """Every 20-byte hex address in a transaction's JSON (accounts it names)."""
    if isinstance(obj, dict):
        for value in obj.values():
            _addresses(value, out)
    elif isinstance(obj, list):
        for value in obj:
            _addresses(value, out)
    elif isinstance(obj, str) and len(obj) == 42 and obj.startswith("0x"):
        out.add(obj.lower())


def demo(rpc: str, console: Console | None = None) -> Summary:
    """Run the scenario against the devnet at ``rpc``; raises DemoFailed."""
    console = console or Console()
    with L2Client(rpc) as client, connect(client.config["l1_rpc_url"]) as w3:
        return Scenario(client, w3, console).run()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rpc", default=None, help="a running devnet's L2 JSON-RPC URL")
    a = p.parse_args()
    try:
        if a.rpc:
            demo(a.rpc)
            return
        sys.path.insert(0, str(ROOT / "tests"))
        from devnet_process import DevnetProcess  # type: ignore[import-not-found]

        with tempfile.TemporaryDirectory() as tmp:
            node = DevnetProcess(None, Path(tmp) / "devnet.log",
                                 **{"--block-time": "0.1", "--batch-interval": "1",
                                    "--funding-interval": "0"})
            node.start()
            try:
                demo(node.url)
            finally:
                node.stop()
    except DemoFailed as exc:
        Console().print(f"[red]demo failed: {exc}[/red]")
        sys.exit(1)


if __name__ == "__main__":
    main()
