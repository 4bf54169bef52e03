"""Replay a real trade tape against a running node (``derivnet replay``).

For each tape trade a market maker rests an order at the tape price on the
passive side and a taker (round-robin over several accounts) sends an IOC
order on the tape's side; the oracle follows the tape price. Everything is
signed and sent over JSON-RPC (batched). Accounts are funded through real
L1 deposits (faucet, approve, ``Rollup.deposit``) on the L1 JSON-RPC.

Orders are deterministic (salt = tape id and role, far expiry), so running
the same replay again after a crash resumes: trades already filled are
answered ``OrderFilled`` and counted as skipped.

Tape format: ``../shared/data/ethusdt-trades-2023-02-02.csv`` (columns
``,timestamp,id,type,side,price,amount,cost,date``; side is the taker side).

Market: ``--market SYMBOL``, else the symbol of the tape's file name
(``ethusdt-...`` -> ``ETH-USD``, see ``node.markets.symbol_from_tape``). If
the node lists it, every tape price and size must be an exact multiple of
its tick and step (else an error names the tape line: prices are never
rounded); if not, and the node's admin is the dev key (a devnet), the replay
lists it with scales fitted to the tape (``node.markets.fit_scales``).
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from node.client import L2Client, RpcError, order_params, quantity
from node.markets import (
    fit_scales,
    list_market_params,
    list_market_tx,
    next_market_id,
    symbol_from_tape,
    to_units,
)
from node.signing import Signer, dev_keys
from node.transactions import Order
from node.wallet import rollup_client

ORDER_EXPIRY = 2**40  # far future: replay orders never expire
MAKER_FUNDING = 50_000_000 * 10**6  # USDC base units
TAKER_FUNDING = 10_000_000 * 10**6
FAUCET_CAP = 10_000_000 * 10**6


@dataclass(frozen=True)
class TapeTrade:
    """One tape row in market units: price (price units), size (size units)."""

    trade_id: int
    timestamp_ms: int
    taker_buys: bool
    price: int
    size: int


@dataclass(frozen=True)
class TapeRow:
    """One tape row as written: price in quote units, size in base units;
    line is the CSV file's line number (1 = header)."""

    line: int
    trade_id: int
    timestamp_ms: int
    taker_buys: bool
    price: Decimal
    size: Decimal


def read_tape_rows(path: str) -> list[TapeRow]:
    """Parse a trade tape CSV; raises ValueError naming the line of a row
    with a bad side, number, or a price/size that is not positive."""
    try:
        return _read_tape_rows(path)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"tape {path} is not a CSV text file: {exc}") from None


def _read_tape_rows(path: str) -> list[TapeRow]:
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        for row in reader:
            line = reader.line_num
            try:
                price, size = Decimal(row["price"]), Decimal(row["amount"])
                trade_id, ts = int(row["id"]), int(row["timestamp"])
            except (ArithmeticError, ValueError, TypeError, KeyError):
                raise ValueError(f"tape line {line}: bad id, timestamp, price or amount") from None
            if not (price.is_finite() and size.is_finite()) or price <= 0 or size <= 0:
                raise ValueError(f"tape line {line} (trade {trade_id}): price and amount must "
                                 "be positive")
            side = (row.get("side") or "").strip().lower()
            if side not in ("buy", "sell"):
                raise ValueError(f"tape line {line} (trade {trade_id}): side must be buy or sell")
            rows.append(TapeRow(line, trade_id, ts, side == "buy", price, size))
    return rows


def tape_trades(rows: list[TapeRow], market: dict[str, Any]) -> list[TapeTrade]:
    """Rows in ``market``'s units (an l2_getMarkets entry). Never rounds:
    raises ValueError naming the tape line of the first price that is not a
    multiple of the tick (or size not a multiple of the step) or that does
    not fit u64."""
    pd, sd = quantity(market["priceDecimals"]), quantity(market["sizeDecimals"])
    tick, step = int(market["tickSize"]), int(market["stepSize"])
    symbol = market.get("symbol") or f"market {market['id']}"
    trades = []
    for r in rows:
        price = to_units(r.price, pd, tick)
        if price is None or price >= 2**64:
            raise ValueError(
                f"tape line {r.line} (trade {r.trade_id}): price {r.price} is not a multiple of "
                f"{symbol}'s tick {Decimal(tick).scaleb(-pd)}; replay on a market with finer "
                "prices (--market NEW-SYMBOL lists one on a devnet)")
        size = to_units(r.size, sd, step)
        if size is None or size >= 2**64:
            raise ValueError(
                f"tape line {r.line} (trade {r.trade_id}): amount {r.size} is not a multiple of "
                f"{symbol}'s step {Decimal(step).scaleb(-sd)}; replay on a market with finer "
                "sizes (--market NEW-SYMBOL lists one on a devnet)")
        trades.append(TapeTrade(r.trade_id, r.timestamp_ms, r.taker_buys, price, size))
    return trades


def read_tape(path: str, price_decimals: int, size_decimals: int) -> list[TapeTrade]:
    """Parse a tape in units of 10^-price_decimals / 10^-size_decimals
    (tick and step 1); raises ValueError naming the line of a row that does
    not fit."""
    return tape_trades(read_tape_rows(path), {
        "id": 0, "symbol": "the market", "priceDecimals": price_decimals,
        "sizeDecimals": size_decimals, "tickSize": 1, "stepSize": 1})


def choose_market(client: L2Client, tape: str, rows: list[TapeRow],
                  symbol: str | None) -> tuple[dict[str, Any], bool]:
    """The l2_getMarkets entry to replay ``rows`` on, and whether it was
    listed now: ``symbol`` (default: from the tape's file name) if listed,
    else a new market fitted to the tape, signed with the dev admin key
    (dev account 0) if that is the node's admin. Raises ValueError."""
    symbol = symbol or symbol_from_tape(tape)
    markets = client.call("l2_getMarkets", "pending")
    for m in markets:
        if m["symbol"] == symbol:
            return m, False
    admin = Signer(dev_keys(1)[0])
    if "0x" + admin.address.hex() != str(client.config.get("admin", "")).lower():
        raise ValueError(f"the node has no market {symbol} and its admin is not the dev key: "
                         "list one with `derivnet markets add` (--admin-key)")
    if not rows:
        raise ValueError("the tape has no trades")
    scales = fit_scales([r.price for r in rows], [r.size for r in rows])
    first = to_units(rows[0].price, scales.price_decimals, 1)
    assert first is not None
    tx = admin.list_market(client.domain,
                           list_market_tx(next_market_id(markets), symbol, scales, first))
    client.call("l2_sendListMarket", list_market_params(tx))
    for m in client.call("l2_getMarkets", "pending"):
        if m["symbol"] == symbol:
            return m, True
    raise ValueError(f"market {symbol} was not listed")  # pragma: no cover


class ReplayIncomplete(RuntimeError):
    """The replay could not finish (its last blocks never reached L1); the
    message says why in one line, ``summary`` is the summary so far."""

    def __init__(self, message: str, summary: dict[str, Any]) -> None:
        super().__init__(message)
        self.summary = summary


def _stall_reason(status: dict[str, Any], last_block: int, timeout: float,
                  summary: dict[str, Any]) -> str:
    """One line: which blocks are stuck, what the node says, what was done."""
    safe = status["safe_l2"]["number"]
    if status.get("frozen"):
        why = "the Rollup is frozen"
    elif status.get("batcher_error"):
        why = f"batcher: {status['batcher_error']}"
    elif status.get("batcher_enabled") is False:
        why = "the batcher is paused (devnet_setBatcher)"
    else:
        why = "no batcher error reported"
    return (f"replay could not finish: L2 blocks #{safe + 1}..#{last_block} not on L1 after "
            f"{timeout:g} s ({why}); so far {summary['fills']} fills, {summary['failed']} "
            f"failed, {summary['blocks']} blocks, {summary['batches']} batches, "
            f"{summary['tradingSeconds']} s trading")


@dataclass
class ReplayOptions:
    tape: str
    rpc: str = "http://127.0.0.1:8545"
    l1_rpc: str | None = None
    market: str | None = None  # symbol; None: from the tape's file name
    takers: int = 4
    limit: int | None = None
    start: int = 0
    rpc_batch: int = 50
    wait_for_l1: bool = True
    progress: bool = True
    timeout: float = 120.0


def fund_accounts(client: L2Client, w3: Any, wants: list[tuple[Signer, int]],
                  timeout: float) -> int:
    """Bring each account's L2 collateral up to its target through L1
    deposits on ``w3``; waits until the node has included them. Returns the
    number of accounts funded."""
    from l1_stub.client import wait_receipt

    rollup = rollup_client(client, w3)
    hashes = []
    targets = {}
    for signer, target in wants:
        have = int(client.get_account(signer.address, "pending")["collateral"])
        if have >= target:
            continue
        need = target - have
        targets[signer.address] = target
        minted = 0
        while minted < need:
            chunk = min(FAUCET_CAP, need - minted)
            hashes.append(rollup.faucet(signer.private_key, chunk))
            minted += chunk
        hashes.append(rollup.approve(signer.private_key, need))
        hashes.append(rollup.deposit(signer.private_key, signer.address, need))
    for h in hashes:
        wait_receipt(w3, h, timeout=timeout)
    deadline = time.monotonic() + timeout
    for address, target in targets.items():
        while int(client.get_account(address, "pending")["collateral"]) < target:
            if time.monotonic() > deadline:
                raise TimeoutError("deposits did not reach L2 in time")
            time.sleep(0.1)
    return len(targets)


def _trade_calls(client: L2Client, maker: Signer, taker: Signer, oracle: Signer | None,
                 market: int, trade: TapeTrade, oracle_ts: int) -> list[tuple[str, list[Any]]]:
    domain = client.domain
    calls: list[tuple[str, list[Any]]] = []
    if oracle is not None:
        tx = oracle.oracle_price(domain, market, trade.price, oracle_ts)
        calls.append(("l2_sendOraclePrice", [{
            "market": market, "price": str(trade.price), "timestamp": oracle_ts,
            "signature": "0x" + tx.signature.hex()}]))
    salt = trade.trade_id * 2
    m = Order(maker.address, market, not trade.taker_buys, trade.price, trade.size, salt,
              ORDER_EXPIRY)
    t = Order(taker.address, market, trade.taker_buys, trade.price, trade.size, salt + 1,
              ORDER_EXPIRY)
    calls.append(("l2_sendOrder", [order_params(m, maker.sign_order(domain, m)[1], "GTC")]))
    calls.append(("l2_sendOrder", [order_params(t, taker.sign_order(domain, t)[1], "IOC")]))
    return calls


def _already_known(error: RpcError) -> bool:
    """A resumed replay re-sends orders the node already has."""
    return error.message.startswith("OrderFilled") or "DuplicateOrder" in error.message


def run_replay(opts: ReplayOptions) -> dict[str, Any]:
    """Run the replay; returns the summary dict (see print_summary)."""
    from l1_stub.client import connect

    client = L2Client(opts.rpc, timeout=opts.timeout)
    try:
        with connect(opts.l1_rpc or client.config["l1_rpc_url"]) as w3:
            return _replay(opts, client, w3)
    finally:
        client.close()


def _replay(opts: ReplayOptions, client: L2Client, w3: Any) -> dict[str, Any]:
    cfg = client.config
    rows = read_tape_rows(opts.tape)
    mk, _ = choose_market(client, opts.tape, rows, opts.market)
    trades = tape_trades(rows, mk)
    trades = trades[opts.start: None if opts.limit is None else opts.start + opts.limit]

    keys = dev_keys(10)
    oracle = Signer(keys[1])
    if "0x" + oracle.address.hex() != cfg["oracle"].lower():
        raise ValueError("the node's oracle is not the dev oracle key; cannot sign prices")
    if not 1 <= opts.takers <= 6:
        raise ValueError("takers must be 1..6 (dev accounts 4..9)")
    maker = Signer(keys[3])
    takers = [Signer(keys[4 + i]) for i in range(opts.takers)]

    started = time.monotonic()
    funded = fund_accounts(client, w3, [(maker, MAKER_FUNDING)]
                           + [(t, TAKER_FUNDING) for t in takers], opts.timeout)
    funding_seconds = time.monotonic() - started
    first_block = client.block_number() + 1

    market_id = quantity(mk["id"])
    oracle_price = int(mk["oraclePrice"])
    oracle_ts = quantity(mk["oracleTime"])
    stats = {"fills": 0, "skipped": 0, "failed": 0, "oracleUpdates": 0}
    errors: list[str] = []
    progress = None
    if opts.progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        progress = Progress("[progress.description]{task.description}", BarColumn(),
                            MofNCompleteColumn(), TimeElapsedColumn())
        progress.start()
        task = progress.add_task("replaying trades", total=len(trades))
    try:
        for chunk_start in range(0, len(trades), opts.rpc_batch):
            chunk = trades[chunk_start: chunk_start + opts.rpc_batch]
            calls: list[tuple[str, list[Any]]] = []
            kinds: list[str] = []
            for i, trade in enumerate(chunk):
                taker = takers[(opts.start + chunk_start + i) % len(takers)]
                send_oracle = trade.price != oracle_price
                if send_oracle:
                    oracle_ts = max(int(time.time()), oracle_ts + 1)
                    oracle_price = trade.price
                tc = _trade_calls(client, maker, taker, oracle if send_oracle else None,
                                  market_id, trade, oracle_ts)
                calls.extend(tc)
                kinds.extend((["oracle"] if send_oracle else []) + ["maker", "taker"])
            results = client.batch(calls)
            for kind, result in zip(kinds, results, strict=True):
                if kind == "oracle":
                    if isinstance(result, RpcError):
                        stats["failed"] += 1
                        errors.append(f"oracle: {result.message}")
                    else:
                        stats["oracleUpdates"] += 1
                elif kind == "taker":
                    if isinstance(result, RpcError):
                        if result.message.startswith("OrderFilled"):
                            stats["skipped"] += 1
                        else:
                            stats["failed"] += 1
                            errors.append(f"taker: {result.message}")
                    else:
                        stats["fills"] += len(result["fills"])
                        if result["status"] != "filled":
                            stats["failed"] += 1
                            errors.append(f"taker order {result['orderHash']} {result['status']}")
                elif isinstance(result, RpcError) and not _already_known(result):
                    stats["failed"] += 1
                    errors.append(f"maker: {result.message}")
            if progress is not None:
                progress.update(task, advance=len(chunk))
    finally:
        if progress is not None:
            progress.stop()
    trading_seconds = time.monotonic() - started - funding_seconds

    # Wait for the blocks to be sealed and posted to L1.
    deadline = time.monotonic() + opts.timeout
    while client.sync_status()["pending_txs"] and time.monotonic() < deadline:
        time.sleep(0.05)
    last_block = client.block_number()
    if opts.wait_for_l1:
        while (status := client.sync_status())["safe_l2"]["number"] < last_block:
            if time.monotonic() > deadline:
                so_far = summarize(client, w3, first_block, last_block, stats, errors, funded,
                                   len(trades), trading_seconds, time.monotonic() - started)
                raise ReplayIncomplete(_stall_reason(status, last_block, opts.timeout, so_far),
                                       so_far)
            time.sleep(0.1)
    return summarize(client, w3, first_block, last_block, stats, errors, funded,
                     len(trades), trading_seconds, time.monotonic() - started)


def summarize(client: L2Client, w3: Any, first_block: int, last_block: int,
              stats: dict[str, int], errors: list[str], funded: int, trades: int,
              trading_seconds: float, elapsed: float) -> dict[str, Any]:
    """Blocks, batches, L1 gas and calldata per fill, and the roots on both layers."""
    rollup = rollup_client(client, w3)
    batches = set()
    for n in range(first_block, last_block + 1):
        b = client.call("l2_getBlockByNumber", hex(n), False)
        if b["batch"] is not None:
            batches.add(quantity(b["batch"]))
    gas = calldata = 0
    for i in sorted(batches):
        info = client.call("l2_getBatch", i)
        receipt = w3.eth.get_transaction_receipt(info["l1Tx"])
        tx = w3.eth.get_transaction(info["l1Tx"])
        gas += int(receipt["gasUsed"])
        calldata += len(bytes(tx["input"]))
    latest = client.call("l2_getBatch", "latest")
    l1_root = "0x" + rollup.latest_state_root().hex()
    l2_root_at_batch = None
    if latest is not None:
        l2_root_at_batch = client.call("l2_getBlockByNumber", latest["lastBlock"],
                                       False)["stateRoot"]
    head = client.call("l2_getBlockByNumber", "latest", False)
    fills = stats["fills"]
    return {
        "trades": trades,
        **stats,
        "accountsFunded": funded,
        "blocks": max(0, last_block - first_block + 1),
        "firstBlock": first_block,
        "lastBlock": last_block,
        "batches": len(batches),
        "l1GasUsed": gas,
        "l1CalldataBytes": calldata,
        "l1GasPerFill": round(gas / fills, 1) if fills else None,
        "calldataBytesPerFill": round(calldata / fills, 1) if fills else None,
        "tradingSeconds": round(trading_seconds, 2),
        "elapsedSeconds": round(elapsed, 2),
        "fillsPerSecond": round(fills / trading_seconds, 1) if trading_seconds else None,
        "l2StateRoot": head["stateRoot"],
        "l2StateRootAtLatestBatch": l2_root_at_batch,
        "l1StateRoot": l1_root,
        "rootsMatch": l1_root == l2_root_at_batch,
        "errors": errors[:20],
    }


def print_summary(summary: dict[str, Any]) -> None:
    """Render the summary as a rich table."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="derivnet replay", show_header=False)
    def _per_fill(value: Any) -> str:
        return "" if value is None else f" ({value} per fill)"

    rows = [
        ("trades", summary["trades"]),
        ("fills", summary["fills"]),
        ("skipped (already filled)", summary["skipped"]),
        ("failed", summary["failed"]),
        ("oracle updates", summary["oracleUpdates"]),
        ("L2 blocks", f"{summary['blocks']}" + (
            f" (#{summary['firstBlock']}..#{summary['lastBlock']})" if summary["blocks"] else "")),
        ("L1 batches", summary["batches"]),
        ("L1 gas", f"{summary['l1GasUsed']:,}" + _per_fill(summary["l1GasPerFill"])),
        ("L1 calldata", f"{summary['l1CalldataBytes']:,} bytes"
                        + _per_fill(summary["calldataBytesPerFill"])),
        ("elapsed", f"{summary['elapsedSeconds']} s (trading {summary['tradingSeconds']} s, "
                    f"{summary['fillsPerSecond']} fills/s)"),
        ("L2 state root (head)", summary["l2StateRoot"]),
        ("L2 state root at latest batch", summary["l2StateRootAtLatestBatch"]),
        ("L1 Rollup latest root", summary["l1StateRoot"]),
        ("roots match", "yes" if summary["rootsMatch"] else "NO"),
    ]
    for k, v in rows:
        table.add_row(k, str(v))
    Console().print(table)
    for e in summary["errors"]:
        Console().print(f"[red]{e}[/red]")
