"""Markets listed at run time (ListMarket), symbols in state, scales that keep
6 significant digits from 1e-6 to 1e6, and tapes of any instrument replayed
end to end (docs/protocol.md, "ListMarket", "Markets and scales")."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from collections.abc import Iterator
from decimal import ROUND_DOWN, Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from node import exceptions as err
from node.batch import BatchBlock, decode_batch, encode_batch
from node.crypto import ZERO_HASH, keccak
from node.client import quantity
from node.db import MemoryDB
from node.eip712 import Domain, list_market_digest, list_market_message, typed_data
from node.genesis import load_genesis, parse_genesis
from node.margin import equity, fee, initial_margin, notional, position_value
from node.markets import (
    Scales,
    fit_scales,
    list_market_json,
    list_market_params,
    list_market_tx,
    symbol_from_tape,
    to_units,
)
from node.replay import read_tape, read_tape_rows, tape_trades
from node.signing import Signer, dev_keys
from node.smt import SparseMerkleTree
from node.state import (
    SYMBOLS_KEY,
    Account,
    Market,
    Position,
    State,
    decode_symbols,
    symbol_bytes,
)
from node.stf import MAX_MARKETS, apply_transaction
from node.transactions import (
    BODY_BYTES,
    TX_LIST_MARKET,
    DecodeError,
    Deposit,
    Fill,
    ListMarket,
    Order,
    decode_tx,
    encode_tx,
)
from tests.devnet_process import TAPE

DOMAIN = Domain(901, bytes.fromhex("5FbDB2315678afecb367f032d93F642f64180aa3"))
NOW = 1_700_000_000
ADMIN = Signer(keccak(b"admin"))
ALICE = Signer(keccak(b"alice"))
BOB = Signer(keccak(b"bob"))
GENESIS = dataclasses.replace(load_genesis(), admin=ADMIN.address)
SHIB = list_market_tx(3, "SHIB-ETH", Scales(12, 0), 104_138_125)


def new_state() -> State:
    tree = SparseMerkleTree(MemoryDB())
    return State(tree, tree.update(ZERO_HASH, GENESIS.leaves()))


def signed(tx: ListMarket, signer: Signer = ADMIN) -> ListMarket:
    return signer.list_market(DOMAIN, tx)


# ------------------------------------------------------------------ encoding

def test_list_market_encoding_round_trip() -> None:
    tx = signed(SHIB)
    raw = encode_tx(tx)
    assert raw[0] == TX_LIST_MARKET == 0x05 and len(raw) == 1 + BODY_BYTES[TX_LIST_MARKET] == 164
    # byte layout of docs/protocol.md
    assert raw[1:5] == (3).to_bytes(4, "big") and raw[5:21] == b"SHIB-ETH" + b"\x00" * 8
    assert raw[21] == 12 and raw[22] == 0
    assert raw[55:63] == (104_138_125).to_bytes(8, "big") and raw[99:] == tx.signature
    assert raw[63:67] == (15_000).to_bytes(4, "big") and raw[67:99] == b"\x00" * 32
    assert decode_tx(raw) == tx
    with pytest.raises(DecodeError):
        decode_tx(raw[:-1])
    blocks = [BatchBlock(NOW, 3, (raw, raw)), BatchBlock(NOW + 1, 3, ())]
    assert decode_batch(encode_batch(blocks)) == blocks
    with pytest.raises(DecodeError):
        dataclasses.replace(tx, symbol=b"SHORT").validate_ranges()
    with pytest.raises(DecodeError):
        dataclasses.replace(tx, price_decimals=256).validate_ranges()


def test_list_market_digest_matches_eth_account() -> None:
    from eth_account import Account as EthAccount
    from eth_account.messages import encode_typed_data

    tx = signed(SHIB)
    full = typed_data(DOMAIN, "ListMarket", list_market_message(tx))
    signable = encode_typed_data(full_message=full)
    assert keccak(b"\x19" + signable.version + signable.header + signable.body) == \
        list_market_digest(DOMAIN, tx)
    assert EthAccount.recover_message(signable, signature=tx.signature) == \
        EthAccount.from_key(ADMIN.private_key).address


# ------------------------------------------------------------------ genesis

def test_genesis_symbols_and_admin_in_state() -> None:
    state = new_state()
    assert state.system.admin == ADMIN.address
    assert {state.symbol_of(i) for i in state.markets} == {"ETH-USD", "BTC-USD"}
    assert state.market_by_symbol("BTC-USD").id == 2
    default = load_genesis()
    assert "0x" + default.admin.hex() == "0x" + Signer(dev_keys(1)[0]).address.hex()
    raw = json.loads(Path("node/genesis.json").read_text())
    del raw["admin"]  # optional: defaults to dev account 0
    assert parse_genesis(raw).admin == default.admin
    for bad in ({"symbol": "eth-usd"}, {"symbol": "A" * 17}, {"priceDecimals": 19},
                {"symbol": "BTC-USD"}):
        spec = json.loads(Path("node/genesis.json").read_text())
        spec["markets"][0].update(bad)
        with pytest.raises(ValueError):
            parse_genesis(spec)


# ------------------------------------------------------------------ STF rules

def _unchanged(state: State, tx: ListMarket, error: type[err.InvalidTransaction]) -> None:
    root = state.root
    markets, symbols = dict(state.markets), dict(state.symbols)
    with pytest.raises(error):
        apply_transaction(state, tx, NOW, DOMAIN)
    assert state.markets == markets and state.symbols == symbols
    assert state.commit() == root


BAD: list[tuple[str, dict[str, Any], type[err.InvalidTransaction]]] = [
    ("listed id", {"market": 1}, err.MarketAlreadyListed),
    ("lower case", {"symbol": symbol_bytes("shib-eth")}, err.InvalidSymbol),
    ("empty", {"symbol": b"\x00" * 16}, err.InvalidSymbol),
    ("digit first", {"symbol": symbol_bytes("1INCH-USD")}, err.InvalidSymbol),
    ("zero inside", {"symbol": b"AB\x00C" + b"\x00" * 12}, err.InvalidSymbol),
    ("space", {"symbol": symbol_bytes("SHIB ETH")}, err.InvalidSymbol),
    ("not ascii", {"symbol": b"\xffSHIB" + b"\x00" * 11}, err.InvalidSymbol),
    ("taken symbol", {"symbol": symbol_bytes("ETH-USD")}, err.DuplicateSymbol),
    ("price decimals", {"price_decimals": 19}, err.InvalidMarketDecimals),
    ("size decimals", {"size_decimals": 19}, err.InvalidMarketDecimals),
    ("zero tick", {"tick_size": 0}, err.InvalidTickStep),
    ("zero step", {"step_size": 0}, err.InvalidTickStep),
    ("zero mmf", {"mmf_ppm": 0}, err.InvalidMarginFraction),
    ("mmf above imf", {"mmf_ppm": 100_001}, err.InvalidMarginFraction),
    ("imf above 100%", {"imf_ppm": 1_000_001}, err.InvalidMarginFraction),
    ("maker fee", {"maker_fee_ppm": 1_000_001}, err.InvalidFee),
    ("taker fee", {"taker_fee_ppm": 1_000_001}, err.InvalidFee),
    ("zero price", {"oracle_price": 0}, err.InvalidPrice),
]


@pytest.mark.parametrize("name,change,error", BAD, ids=[b[0] for b in BAD])
def test_list_market_rules(name: str, change: dict[str, Any],
                           error: type[err.InvalidTransaction]) -> None:
    _unchanged(new_state(), signed(dataclasses.replace(SHIB, **change)), error)


def test_list_market_signature_and_rule_order() -> None:
    state = new_state()
    _unchanged(state, signed(SHIB, ALICE), err.InvalidAdminSignature)
    # a signature over other fields (tampered after signing) recovers another key
    _unchanged(state, dataclasses.replace(signed(SHIB), oracle_price=1), err.InvalidAdminSignature)
    # several broken rules: the first in the documented order is reported
    worst = dataclasses.replace(SHIB, market=1, symbol=symbol_bytes("eth"), tick_size=0)
    _unchanged(state, signed(worst, ALICE), err.InvalidAdminSignature)
    _unchanged(state, signed(worst), err.MarketAlreadyListed)
    _unchanged(state, signed(dataclasses.replace(worst, market=9)), err.InvalidSymbol)


@given(market=st.integers(0, 2**32 - 1),
       symbol=st.one_of(st.sampled_from(["SHIB-ETH", "ETH-USD", "A", "Z9_./-", "a", ""]),
                        st.text("ABZ09-.", max_size=16)),
       pd=st.integers(0, 20), sd=st.integers(0, 20),
       tick=st.sampled_from([0, 1, 7]), step=st.sampled_from([0, 1, 10**6]),
       imf=st.sampled_from([0, 50_000, 100_000, 10**6, 10**6 + 1]),
       mmf=st.sampled_from([0, 50_000, 100_000]),
       fees=st.sampled_from([(0, 0), (200, 500), (10**6, 10**6), (10**6 + 1, 0)]),
       price=st.sampled_from([0, 1, 2**64 - 1]))
def test_list_market_property(market: int, symbol: str, pd: int, sd: int, tick: int, step: int,
                              imf: int, mmf: int, fees: tuple[int, int], price: int) -> None:
    """Any ListMarket either lists exactly its market and symbol, or raises a
    rule and changes nothing; it applies iff every documented rule holds."""
    state = new_state()
    tx = signed(ListMarket(market, symbol_bytes(symbol), pd, sd, tick, step, imf, mmf, *fees,
                           price, b""))
    ok = (market not in (1, 2) and symbol[:1].isalpha() and symbol[:1].isupper()
          and symbol not in ("ETH-USD", "BTC-USD") and pd <= 18 and sd <= 18 and tick and step
          and 0 < mmf <= imf <= 10**6 and max(fees) <= 10**6 and price > 0)
    root = state.root
    try:
        apply_transaction(state, tx, NOW, DOMAIN)
    except err.InvalidTransaction:
        assert not ok
        assert state.commit() == root
        return
    assert ok
    state.commit()
    assert state.markets[market].as_tuple() == (market, pd, sd, tick, step, imf, mmf, *fees,
                                                price, 0, 0, 0, 0, 15_000, 0, 0, 0)
    assert state.symbol_of(market) == symbol and len(state.markets) == 3


def test_list_market_applies_and_replays_fail() -> None:
    state = new_state()
    tx = signed(SHIB)
    apply_transaction(state, tx, NOW, DOMAIN)
    root = state.commit()
    fresh = State(state.tree, root)
    assert fresh.markets[3] == Market(3, 12, 0, 1, 1, 100_000, 50_000, 200, 500, 104_138_125, 0)
    assert fresh.symbol_of(3) == "SHIB-ETH" and fresh.market_by_symbol("SHIB-ETH").id == 3
    assert decode_symbols(state.tree.get(root, SYMBOLS_KEY) or b"")[3] == symbol_bytes("SHIB-ETH")
    # the same signed listing again (replay protection: each id lists once)
    _unchanged(fresh, tx, err.MarketAlreadyListed)
    # another id under the same symbol
    _unchanged(fresh, signed(dataclasses.replace(SHIB, market=4)), err.DuplicateSymbol)


def test_too_many_markets() -> None:
    state = new_state()
    for i in range(MAX_MARKETS - len(state.markets)):
        apply_transaction(state, signed(dataclasses.replace(
            SHIB, market=10 + i, symbol=symbol_bytes(f"M{i}"))), NOW, DOMAIN)
    assert len(state.markets) == MAX_MARKETS
    state.commit()
    _unchanged(state, signed(dataclasses.replace(SHIB, market=999, symbol=symbol_bytes("LAST"))),
               err.TooManyMarkets)


def test_fills_on_a_listed_fine_market() -> None:
    """A market at 12 price decimals and 8 size decimals trades at 1e-6 and 1e6."""
    state = new_state()
    fine = signed(list_market_tx(7, "FINE-USD", Scales(12, 8), 10**6))
    apply_transaction(state, fine, NOW, DOMAIN)
    for i, who in enumerate((ALICE, BOB)):
        apply_transaction(state, Deposit(i, who.address, 10**12), NOW, DOMAIN)
    market = state.markets[7]
    for salt, (price, size) in enumerate([(1_000_001, 123_456_789_012), (10**18, 1)]):
        maker = Order(ALICE.address, 7, False, price, size, salt, NOW + 60)
        taker = Order(BOB.address, 7, True, price, size, salt, NOW + 60)
        before = state.account(BOB.address).collateral
        apply_transaction(state, Fill(maker, ALICE.sign_order(DOMAIN, maker)[1], taker,
                                      BOB.sign_order(DOMAIN, taker)[1], size, price), NOW, DOMAIN)
        exact = Fraction(size * price * 10**6, 10 ** (12 + 8))
        pay, receive = notional(market, size, price)
        assert pay == -(-exact.numerator // exact.denominator)
        assert receive == exact.numerator // exact.denominator
        taker_fee = fee(pay, market.taker_fee_ppm)
        assert state.account(BOB.address).collateral == before - pay - taker_fee
    state.commit()


# ------------------------------------------------------------------ scales

def test_margin_math_exact_at_every_scale() -> None:
    """No overflow or lost digit for pd, sd up to 18 and u64 prices/sizes:
    results equal exact rational arithmetic rounded as documented."""
    for pd in range(19):
        for sd in range(19):
            m = Market(1, pd, sd, 1, 1, 100_000, 50_000, 200, 500, 2**64 - 1, 0)
            scale = 10 ** (pd + sd)
            for size in (1, 3, 10**sd + 7, 2**64 - 1):
                for signed_size in (size, -size):
                    exact = Fraction(signed_size * m.oracle_price * 10**6, scale)
                    assert position_value(m, signed_size) == math.floor(exact)
                pay, receive = notional(m, size, m.oracle_price)
                exact = Fraction(size * m.oracle_price * 10**6, scale)
                assert (pay, receive) == (math.ceil(exact), math.floor(exact))
                acc = Account(0, 0, (Position(1, -size, 0),))
                assert initial_margin(acc, {1: m}) == \
                    math.ceil(Fraction(size * m.oracle_price * m.imf_ppm, scale))
                assert equity(acc, {1: m}) == math.floor(-exact)


@given(st.integers(100_000, 999_999), st.integers(-11, 1))
def test_six_significant_digits_from_1e_minus_6_to_1e6(mantissa: int, exponent: int) -> None:
    """Any price with 6 significant digits between 1e-6 and 1e6 quote units
    fits a market exactly, and fit_scales keeps >= 6 digits in u64."""
    price = Decimal(mantissa).scaleb(exponent)
    if not Decimal("1e-6") <= price <= Decimal("1e6"):
        return
    scales = fit_scales([price], [Decimal(1)])
    units = to_units(price, scales.price_decimals, 1)
    assert units is not None and len(str(units)) >= 6 and units < 2**64
    # one scale for the whole range: 12 price decimals
    twelve = to_units(price, 12, 1)
    assert twelve is not None and len(str(twelve).rstrip("0")) <= 6 <= len(str(twelve))
    assert twelve < 2**64


def test_fit_scales_and_symbols() -> None:
    assert fit_scales([Decimal("1666.21"), Decimal("1667.3")], [Decimal("0.001")]) == Scales(2, 3)
    assert fit_scales([Decimal("0.000104138")], [Decimal("1000")]) == Scales(9, 0)
    assert fit_scales([Decimal("0.000001")], [Decimal("5")]) == Scales(11, 0)
    assert fit_scales([Decimal("100000")], [Decimal("0.00001666")]) == Scales(0, 8)
    assert fit_scales([Decimal("2")], [Decimal("1")]) == Scales(5, 0)  # 6 digits of 2.00000
    with pytest.raises(ValueError):
        fit_scales([Decimal("1e-20")], [Decimal(1)])
    with pytest.raises(ValueError):
        fit_scales([Decimal("1e20")], [Decimal(1)])  # beyond u64
    assert fit_scales([Decimal("1e15")], [Decimal(1)]) == Scales(0, 0)
    with pytest.raises(ValueError):
        fit_scales([Decimal(0)], [Decimal(1)])
    assert symbol_from_tape("/x/ethusdt-trades-2023-02-02.csv") == "ETH-USD"
    assert symbol_from_tape("shibeth.csv") == "SHIB-ETH"
    assert symbol_from_tape("xbtusd_synth.csv") == "XBT-USD"
    assert symbol_from_tape("weird.csv") == "WEIRD"
    assert to_units(Decimal("1666.215"), 2, 1) is None
    assert to_units(Decimal("1666.20"), 2, 10) == 166620
    assert to_units(Decimal("1666.21"), 2, 10) is None


def test_tape_price_off_the_tick_names_the_line(tmp_path: Path) -> None:
    tape = write_tape(tmp_path / "ethusdt-fine.csv", limit=5,
                      price=lambda p, i: p + (Decimal("0.001") if i == 3 else 0))
    rows = read_tape_rows(str(tape))
    eth = {"id": 1, "symbol": "ETH-USD", "priceDecimals": 2, "sizeDecimals": 4,
           "tickSize": "1", "stepSize": "1"}
    with pytest.raises(ValueError, match=r"tape line 5 \(trade \d+\): price 166\d\.\d{3} is not a "
                                         r"multiple of ETH-USD's tick 0\.01"):
        tape_trades(rows, eth)
    with pytest.raises(ValueError, match="tape line 5"):
        read_tape(str(tape), 2, 4)
    assert len(read_tape(str(tape), 3, 4)) == 5
    coarse = {**eth, "stepSize": "100"}
    with pytest.raises(ValueError, match=r"tape line \d+ .*amount .* step 0\.01"):
        tape_trades(rows, {**coarse, "priceDecimals": 3})


@pytest.mark.parametrize("line, rule", [
    ("1,1675329600138,1,,buy,-5,1.0,1,x", "price and amount must be positive"),
    ("1,1675329600138,1,,buy,1666.8,0,1,x", "price and amount must be positive"),
    ("1,1675329600138,1,,buy,nan,1,1,x", "price and amount must be positive"),
    ("1,1675329600138,1,,hold,1666.8,1,1,x", "side must be buy or sell"),
    ("1,soon,1,,buy,1666.8,1,1,x", "bad id, timestamp, price or amount"),
])
def test_bad_tape_rows_name_the_rule(tmp_path: Path, line: str, rule: str) -> None:
    tape = tmp_path / "bad.csv"
    tape.write_text(",timestamp,id,type,side,price,amount,cost,date\n" + line + "\n")
    with pytest.raises(ValueError, match=f"tape line 2.*{rule}"):
        read_tape_rows(str(tape))


def test_binary_tape_is_refused_in_one_line(tmp_path: Path) -> None:
    tape = tmp_path / "binary.csv"
    tape.write_bytes(b"garbage\n\x00\xff\n")
    with pytest.raises(ValueError, match="is not a CSV text file"):
        read_tape_rows(str(tape))


# ------------------------------------------------------------------ Rollup

def test_rollup_accepts_a_batch_with_list_market(capsys: pytest.CaptureFixture[str]) -> None:
    """submitBatch splits a real signed ListMarket (128 bytes) and commits to
    the same step leaves as node.batch; a truncated one is rejected."""
    from l1_stub.chain import EmbeddedL1
    from node.batch import batch_commitment
    from tests.test_l1_contracts import deploy_rollup

    l1 = EmbeddedL1(auto_mine=True)
    _, client = deploy_rollup(l1)
    tx = encode_tx(signed(SHIB))
    blocks = [BatchBlock(NOW, 1, (tx,)), BatchBlock(NOW + 1, 1, (tx, tx))]
    data = encode_batch(blocks)
    cut = encode_batch([BatchBlock(NOW, 1, (tx,))])[:-1]
    with pytest.raises(Exception, match="batch: truncated"):
        client.rollup.functions.submitBatch(cut, keccak(b"r"), 0).call({"from": l1.dev_accounts[0]})
    from l1_stub.client import wait_receipt

    receipt = wait_receipt(l1.w3, client.submit_batch(l1.dev_keys[0], data, keccak(b"r"), 0))
    record = client.get_batch(0)
    assert client.tx_root_of(0, data) == batch_commitment(blocks) and record.step_count == 3
    empty = wait_receipt(l1.w3, client.submit_batch(
        l1.dev_keys[0], encode_batch([BatchBlock(NOW + 2, 1, ())]), keccak(b"s"), 0))
    with capsys.disabled():
        print(f"\nsubmitBatch gas: 3 ListMarket in 2 blocks {receipt['gasUsed']}, "
              f"1 empty block {empty['gasUsed']}")


# ------------------------------------------------------------------ Rollup escape

def test_escape_values_at_fine_scales() -> None:
    """The Rollup's escape() values positions of 12/8 and 18/18-decimal markets
    exactly as node.margin does (no overflow, same floors)."""
    from tests.test_settlement_contracts import (
        SettlementWindows,
        account,
        addr20,
        fund_rollup,
        make_env,
        state_of,
    )

    markets = {
        1: Market(1, 12, 8, 1, 1, 100_000, 50_000, 200, 500, 104_138_125, 1),
        2: Market(2, 12, 8, 1, 1, 100_000, 50_000, 200, 500, 999_999_123_456_789_012, 1),
        3: Market(3, 18, 18, 1, 1, 100_000, 50_000, 200, 500, 2**64 - 1, 1),
        4: Market(4, 0, 8, 1, 1, 100_000, 50_000, 200, 500, 100_001, 1),
    }
    accounts = {
        addr20("fine long"): account(10**9, (1, 2**64 - 1), (2, 12_345_678)),
        addr20("fine short"): account(10**15, (1, -(2**64 - 1)), (2, -12_345_679), (4, -3)),
        addr20("extreme"): account(10**10, (3, -(10**20) - 7), (4, 10**8 + 1)),
    }
    env = make_env(SettlementWindows(0, 30, 0))
    state = state_of(accounts, markets=markets)
    expected = {a: max(equity(acc, markets), 0) for a, acc in accounts.items()}
    assert all(v > 0 for v in expected.values())
    fund_rollup(env, sum(expected.values()))
    env.submit(state.root)
    env.wait(env.client.freeze(env.key(5)))
    for a, amount in expected.items():
        before = env.balance(a)
        env.wait(env.escape(state, a))
        assert env.balance(a) - before == amount
    assert env.balance(env.deployment.rollup) == 0


# ------------------------------------------------------------------ node + RPC

@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from node.node import Node, NodeConfig

    n = Node(NodeConfig(serve_l1=False))
    maker, taker = Signer(dev_keys(5)[3]), Signer(dev_keys(5)[4])
    n.sequencer.include_deposit(Deposit(0, maker.address, 10**12))
    n.sequencer.include_deposit(Deposit(1, taker.address, 10**12))
    n.sequencer.seal()
    yield n
    n.close()


def rpc(node: Any, method: str, *params: Any) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(node.app.handle(json.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})))
    return out


def test_rpc_list_market_and_trade(node: Any) -> None:
    admin = Signer(dev_keys(1)[0])
    domain = node.chain.domain
    tx = admin.list_market(domain, list_market_tx(3, "SHIB-ETH", Scales(12, 0), 104_138_125))
    params = list_market_params(tx)
    assert params["symbol"] == "SHIB-ETH" and params["oraclePrice"] == "104138125"
    before = rpc(node, "l2_getMarkets", "pending")["result"]
    bad = rpc(node, "l2_sendListMarket", list_market_params(Signer(dev_keys(2)[1]).list_market(
        domain, tx)))
    assert bad["error"]["code"] == -32003
    assert bad["error"]["message"].startswith("InvalidAdminSignature")
    for field, value in (("symbol", "X" * 17), ("priceDecimals", 256), ("market", -1),
                         ("signature", "0x00")):
        e = rpc(node, "l2_sendListMarket", {**params, field: value})["error"]
        assert e["code"] == -32602, e
    assert rpc(node, "l2_getMarkets", "pending")["result"] == before

    ok = rpc(node, "l2_sendListMarket", params)["result"]
    assert ok["market"] == "0x3" and ok["txHash"] == "0x" + keccak(encode_tx(tx)).hex()
    dup = rpc(node, "l2_sendListMarket", params)["error"]
    assert dup["message"].startswith("MarketAlreadyListed")
    listed = {m["symbol"]: m for m in rpc(node, "l2_getMarkets", "pending")["result"]}
    assert listed["SHIB-ETH"]["priceDecimals"] == "0xc" and listed["SHIB-ETH"]["id"] == "0x3"
    # the listing is sealed at once: in the latest block already
    assert "SHIB-ETH" in {m["symbol"] for m in rpc(node, "l2_getMarkets")["result"]}
    full = rpc(node, "l2_getBlockByNumber", "latest", True)["result"]
    assert [t["type"] for t in full["transactions"]] == ["ListMarket"]
    assert full["transactions"][0]["symbol"] == "SHIB-ETH"
    assert {k: v for k, v in full["transactions"][0].items() if k not in ("type", "hash")} == \
        list_market_json(tx)
    # the book exists at once; orders by symbol trade
    from node.client import order_params

    maker, taker = Signer(dev_keys(5)[3]), Signer(dev_keys(5)[4])
    m = Order(maker.address, 3, False, 104_138_126, 5_000, 1, 2**40)
    t = Order(taker.address, 3, True, 104_138_126, 5_000, 2, 2**40)
    r1 = rpc(node, "l2_sendOrder", order_params(m, maker.sign_order(domain, m)[1]))["result"]
    assert r1["status"] == "resting"
    book = rpc(node, "l2_getOrderBook", "SHIB-ETH", 5)["result"]
    assert book["symbol"] == "SHIB-ETH" and book["asks"] == [["104138126", "5000", "0x1"]]
    r2 = rpc(node, "l2_sendOrder", order_params(t, taker.sign_order(domain, t)[1], "IOC"))
    assert r2["result"]["status"] == "filled"
    block = node.sequencer.seal()
    full = rpc(node, "l2_getBlockByNumber", hex(block.number), True)["result"]
    assert [f["market"] for f in full["fills"]] == ["0x3"]
    acct = rpc(node, "l2_getAccount", "0x" + taker.address.hex())["result"]
    assert [p["symbol"] for p in acct["positions"]] == ["SHIB-ETH"]


def test_books_of_listed_markets_after_restart(tmp_path: Path) -> None:
    from node.node import Node, NodeConfig

    cfg = NodeConfig(serve_l1=False, datadir=str(tmp_path / "d"))
    n = Node(cfg)
    admin = Signer(dev_keys(1)[0])
    tx = admin.list_market(n.chain.domain, list_market_tx(5, "XBT-USD", Scales(1, 8), 999_931))
    n.sequencer.send_list_market(tx)  # sealed at once
    n.close()
    n = Node(cfg)
    try:
        assert 5 in n.sequencer.books
        assert n.chain.state.symbol_of(5) == "XBT-USD"
    finally:
        n.close()


# ------------------------------------------------------------------ end to end

def write_tape(path: Path, limit: int, price: Any = None, size: Any = None) -> Path:
    """A tape with the shared tape's structure (ids, times, sides), prices
    and sizes transformed; written to ``path`` (never into the project)."""
    with open(TAPE, newline="") as f:
        rows = list(csv.DictReader(f))[:limit]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["", "timestamp", "id", "type", "side", "price",
                                          "amount", "cost", "date"])
        w.writeheader()
        for i, row in enumerate(rows):
            p, a = Decimal(row["price"]), Decimal(row["amount"])
            if price is not None:
                p = price(p, i)
            if size is not None:
                a = size(a, i)
            w.writerow({**row, "price": str(p), "amount": str(a), "cost": str(p * a)})
    return path


def low_tape(path: Path, limit: int) -> Path:
    """~0.0001 (quoted in ETH), 9 significant digits; sizes x 1e6."""
    return write_tape(path, limit,
                      price=lambda p, i: (p / 16_000_000).quantize(Decimal("1e-13"), ROUND_DOWN),
                      size=lambda a, i: a * 1_000_000)


def high_tape(path: Path, limit: int) -> Path:
    """~100,000 with 6 decimals; sizes / 60 (at 1e-8)."""
    return write_tape(path, limit, price=lambda p, i: p * Decimal("60.0123"),
                      size=lambda a, i: max((a / 60).quantize(Decimal("1e-8"), ROUND_DOWN),
                                            Decimal("1e-8")))


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.devnet_process import DevnetProcess

    tmp = tmp_path_factory.mktemp("markets-devnet")
    d = DevnetProcess(None, tmp / "devnet.log")
    d.start()
    yield d
    d.stop()


@pytest.mark.parametrize("kind,name,symbol", [("low", "shibeth-synth.csv", "SHIB-ETH"),
                                              ("high", "xbtusd-synth.csv", "XBT-USD")])
def test_any_instrument_tape_replays(devnet: Any, tmp_path: Path, kind: str, name: str,
                                     symbol: str) -> None:
    from node.client import L2Client
    from node.replay import ReplayOptions, run_replay

    tape = (low_tape if kind == "low" else high_tape)(tmp_path / name, 200)
    if kind == "low":
        summary = run_replay(ReplayOptions(tape=str(tape), rpc=devnet.url, progress=False,
                                           limit=200))
    else:  # as a user would: the command line, nothing edited
        from node.cli import main

        out = CliRunner().invoke(main, ["replay", str(tape), "--rpc", devnet.url, "--json"])
        assert out.exit_code == 0, out.output
        summary = json.loads(out.output)
    assert summary["failed"] == 0, summary["errors"]
    assert summary["fills"] == 200 and summary["rootsMatch"], summary
    assert summary["l1StateRoot"] == summary["l2StateRootAtLatestBatch"]
    with L2Client(devnet.url) as client:
        listed = {m["symbol"]: m for m in client.call("l2_getMarkets")}
        m = listed[symbol]
        pd, sd = quantity(m["priceDecimals"]), quantity(m["sizeDecimals"])
        first = read_tape_rows(str(tape))[0].price
        fitted = fit_scales([r.price for r in read_tape_rows(str(tape))],
                            [r.size for r in read_tape_rows(str(tape))])
        assert (pd, sd) == (fitted.price_decimals, fitted.size_decimals)
        assert first * 10 ** pd >= 10**5  # >= 6 significant digits
        # the oracle followed the tape: its last price
        last = read_tape_rows(str(tape))[199].price
        assert Decimal(int(m["oraclePrice"])).scaleb(-pd) == last
        # positions of the new market net to zero
        holders = [Signer(k).address for k in dev_keys(10)[3:8]]
        net = sum(int(p["size"]) for a in holders
                  for p in client.call("l2_getAccount", "0x" + a.hex())["positions"]
                  if p["market"] == m["id"])
        assert net == 0
    # a second run resumes on the listed market: nothing new to fill
    again = run_replay(ReplayOptions(tape=str(tape), rpc=devnet.url, progress=False, limit=20))
    assert again["skipped"] == 20 and again["fills"] == 0 and again["failed"] == 0


def test_cli_markets_and_refusals(devnet: Any, tmp_path: Path) -> None:
    from node.cli import main

    runner = CliRunner()
    out = runner.invoke(main, ["markets", "--rpc", devnet.url, "--json"])
    assert out.exit_code == 0, out.output
    before = {m["symbol"] for m in json.loads(out.output)}
    assert {"ETH-USD", "BTC-USD"} <= before
    added = runner.invoke(main, ["markets", "add", "PEPE-USD", "--price-decimals", "12",
                                 "--size-decimals", "0", "--oracle-price", "0.00000123456",
                                 "--rpc", devnet.url, "--json"])
    assert added.exit_code == 0, added.output
    assert json.loads(added.output)["symbol"] == "PEPE-USD"
    again = runner.invoke(main, ["markets", "add", "PEPE-USD", "--price-decimals", "12",
                                 "--size-decimals", "0", "--oracle-price", "0.00000123456",
                                 "--rpc", devnet.url])
    assert again.exit_code == 1 and "DuplicateSymbol" in again.output
    assert len(again.output.strip().splitlines()) == 1
    off = runner.invoke(main, ["markets", "add", "X-USD", "--price-decimals", "2",
                               "--size-decimals", "0", "--oracle-price", "1.234",
                               "--rpc", devnet.url])
    assert off.exit_code == 2 and "--oracle-price" in off.output
    table = runner.invoke(main, ["markets", "--rpc", devnet.url])
    assert table.exit_code == 0 and "PEPE-USD" in table.output
    assert "0.000001234560" in table.output
    for args in (["markets", "--help"], ["markets", "add", "--help"]):
        assert runner.invoke(main, args).exit_code == 0
    # a listed market too coarse for the tape: an error naming the line, no trade sent
    tape = low_tape(tmp_path / "shibeth-x.csv", 5)
    from node.replay import ReplayOptions, run_replay

    with pytest.raises(ValueError, match=r"tape line 2 \(trade \d+\): price 0\.0001\d+ is not a "
                                         r"multiple of ETH-USD's tick 0\.01"):
        run_replay(ReplayOptions(tape=str(tape), rpc=devnet.url, progress=False,
                                 market="ETH-USD"))
    out = runner.invoke(main, ["replay", str(tape), "--rpc", devnet.url, "--market", "BTC-USD"])
    assert out.exit_code == 1 and len(out.output.strip().splitlines()) == 1
    assert "tape line 2" in out.output and "BTC-USD's tick 0.1" in out.output
