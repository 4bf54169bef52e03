"""Encoding round-trips and EIP-712 digests against eth-account."""

from __future__ import annotations

import pytest
from eth_abi import decode as abi_decode
from eth_account import Account as EthAccount
from eth_account.messages import encode_typed_data
from hypothesis import given
from hypothesis import strategies as st

from node.batch import BatchBlock, batch_commitment, decode_batch, encode_batch, step_leaves
from node.blocks import Block, Receipt, genesis_block, make_header
from node.crypto import keccak
from node.eip712 import (
    Domain,
    cancel_digest,
    funding_tick_digest,
    oracle_price_digest,
    order_hash,
    order_message,
    typed_data,
    withdraw_digest,
)
from node.merkle import merkle_proof, merkle_root, verify_merkle_proof
from node.signing import Signer
from node.state import Account, Market, Position, System, Withdrawal, decode_markets, encode_markets
from node.genesis import load_genesis
from node.transactions import (
    DecodeError,
    Deposit,
    Fill,
    Deleverage,
    FundingTick,
    Liquidate,
    ListMarket,
    OraclePrice,
    Order,
    SettleFunding,
    Withdraw,
    decode_tx,
    encode_tx,
)

DOMAIN = Domain(901, bytes.fromhex("5FbDB2315678afecb367f032d93F642f64180aa3"))
KEY = keccak(b"eip712 test key")
SIGNER = Signer(KEY)

u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
addr = st.binary(min_size=20, max_size=20)
sig = st.binary(min_size=65, max_size=65)
orders = st.builds(Order, addr, u32, st.booleans(), u64, u64, u64, u64)
txs = st.one_of(
    st.builds(Deposit, u64, addr, st.integers(0, 2**128 - 1)),
    st.builds(Fill, orders, sig, orders, sig, u64, u64),
    st.builds(OraclePrice, u32, u64, u64, sig),
    st.builds(Withdraw, addr, addr, st.integers(0, 2**128 - 1), u64, sig),
    st.builds(ListMarket, u32, st.binary(min_size=16, max_size=16), st.integers(0, 255),
              st.integers(0, 255), u64, u64, u32, u32, u32, u32, u64, sig, u32,
              st.integers(0, 2**128 - 1), st.integers(0, 2**128 - 1)),
    st.builds(FundingTick, u32, u64, st.integers(-(2**31), 2**31 - 1), sig),
    st.builds(Liquidate, addr, orders, sig, u64, u64),
    st.builds(Deleverage, addr, addr, u32, u64),
    st.builds(SettleFunding, addr, u32),
)


def test_new_tx_sizes_and_offsets() -> None:
    """Encoded sizes of docs/protocol.md's Transactions table (ListMarket 164,
    Liquidate 159, Deleverage 53, SettleFunding 25) and ListMarket's new offsets.
    Liquidate's body is its fields' sum 20 + 57 + 65 + 8 + 8 = 158 (risk spec v1
    said 166/167 next to the same field list: the field list decides)."""
    order = Order(b"\x01" * 20, 1, True, 5, 6, 7, 8)
    liq = encode_tx(Liquidate(b"\x02" * 20, order, b"\x03" * 65, 9, 10))
    assert len(liq) == 159 and liq[0] == 0x07 and liq[21:78] == order.encode()
    assert liq[143:151] == (9).to_bytes(8, "big") and liq[151:159] == (10).to_bytes(8, "big")
    dl = encode_tx(Deleverage(b"\x02" * 20, b"\x04" * 20, 3, 11))
    assert len(dl) == 53 and dl[0] == 0x08 and dl[41:45] == (3).to_bytes(4, "big")
    sf = encode_tx(SettleFunding(b"\x02" * 20, 3))
    assert len(sf) == 25 and sf[0] == 0x09
    lm = ListMarket(3, b"X".ljust(16, b"\x00"), 2, 4, 1, 1, 100_000, 50_000, 200, 500, 42,
                    b"\x05" * 65, 12_345, 25 * 10**12, 50 * 10**12)
    body = encode_tx(lm)[1:]
    assert len(body) == 163 and body[54:62] == (42).to_bytes(8, "big")
    assert body[62:66] == (12_345).to_bytes(4, "big")
    assert body[66:82] == (25 * 10**12).to_bytes(16, "big")
    assert body[82:98] == (50 * 10**12).to_bytes(16, "big") and body[98:163] == b"\x05" * 65


@given(txs)
def test_tx_round_trip(tx) -> None:
    assert decode_tx(encode_tx(tx)) == tx


@given(st.lists(st.tuples(u64, u64, st.lists(txs, max_size=4)), max_size=4))
def test_batch_round_trip(blocks) -> None:
    bb = [BatchBlock(ts, origin, tuple(encode_tx(t) for t in ts_txs)) for ts, origin, ts_txs in blocks]
    assert decode_batch(encode_batch(bb)) == bb
    assert batch_commitment(bb) == merkle_root(step_leaves(bb))


def test_malformed_tx_and_batch_rejected() -> None:
    good = encode_tx(Deposit(1, b"\x01" * 20, 5))
    with pytest.raises(DecodeError, match="unknown transaction type"):
        decode_tx(b"\x0a" + good[1:])
    with pytest.raises(DecodeError, match="truncated"):
        decode_tx(good[:-1])
    with pytest.raises(DecodeError, match="trailing"):
        decode_tx(good + b"\x00")
    with pytest.raises(DecodeError, match="side byte"):
        Order.decode(b"\x00" * 24 + b"\x02" + b"\x00" * 32)
    batch = encode_batch([BatchBlock(1, 2, (good,))])
    with pytest.raises(DecodeError):
        decode_batch(batch[:-3])
    with pytest.raises(DecodeError, match="header"):
        decode_batch(batch + b"\x00" * 5)


@given(st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=9), st.data())
def test_merkle_proofs(leaves, data) -> None:
    root = merkle_root(leaves)
    i = data.draw(st.integers(0, len(leaves) - 1))
    proof = merkle_proof(leaves, i)
    assert verify_merkle_proof(root, leaves[i], i, proof)
    assert not verify_merkle_proof(root, keccak(leaves[i]), i, proof)


def test_merkle_root_rules() -> None:
    a, b, c = keccak(b"a"), keccak(b"b"), keccak(b"c")
    assert merkle_root([]) == b"\x00" * 32
    assert merkle_root([a]) == a
    assert merkle_root([a, b, c]) == keccak(keccak(a + b) + keccak(c + b"\x00" * 32))


def _full_digest(full: dict) -> bytes:
    signable = encode_typed_data(full_message=full)
    return keccak(b"\x19" + signable.version + signable.header + signable.body)


@given(orders)
def test_order_hash_matches_eth_account(order) -> None:
    assert order_hash(DOMAIN, order) == _full_digest(typed_data(DOMAIN, "Order", order_message(order)))


def test_signatures_match_eth_account() -> None:
    order = Order(SIGNER.address, 1, True, 166621, 10_000, 7, 1_800_000_000)
    digest, signature = SIGNER.sign_order(DOMAIN, order)
    full = typed_data(DOMAIN, "Order", order_message(order))
    signed = EthAccount.from_key(KEY).sign_message(encode_typed_data(full_message=full))
    assert bytes(signed.signature) == signature
    assert EthAccount.recover_message(encode_typed_data(full_message=full), signature=signature) == \
        EthAccount.from_key(KEY).address


def test_other_digests_match_eth_account() -> None:
    a = SIGNER.address
    target = keccak(b"order")
    assert cancel_digest(DOMAIN, a, target) == _full_digest(
        typed_data(DOMAIN, "Cancel", {"account": "0x" + a.hex(), "orderHash": target}))
    assert oracle_price_digest(DOMAIN, 1, 166621, 1_700_000_000) == _full_digest(
        typed_data(DOMAIN, "OraclePrice", {"market": 1, "price": 166621, "timestamp": 1_700_000_000}))
    for premium in (-(2**31), -1, 0, 2500, 2**31 - 1):
        assert funding_tick_digest(DOMAIN, 2, 1_700_000_000, premium) == _full_digest(
            typed_data(DOMAIN, "FundingTick",
                       {"market": 2, "timestamp": 1_700_000_000, "premiumPpm": premium}))
    tick = SIGNER.funding_tick(DOMAIN, 2, 1_700_000_000, -7)
    raw = encode_tx(tick)
    assert len(raw) == 82 and raw[0] == 6 and raw[13:17] == (-7).to_bytes(4, "big", signed=True)
    assert withdraw_digest(DOMAIN, a, b"\x07" * 20, 10**9, 3) == _full_digest(
        typed_data(DOMAIN, "Withdraw", {"account": "0x" + a.hex(), "recipient": "0x" + "07" * 20,
                                        "amount": 10**9, "nonce": 3}))


@given(st.integers(-(2**255), 2**255 - 1), u64,
       st.lists(st.tuples(u32, st.integers(-(2**127), 2**127 - 1),
                          st.integers(-(2**255), 2**255 - 1), st.integers(-(2**255), 2**255 - 1),
                          st.integers(-(2**255), 2**255 - 1)),
                max_size=3, unique_by=lambda t: t[0]))
def test_account_leaf_round_trip(collateral, nonce, positions) -> None:
    acc = Account(collateral, nonce, tuple(Position(*p) for p in sorted(positions)))
    assert Account.decode(acc.encode()) == acc
    assert abi_decode(["int256"], acc.encode()[:32])[0] == collateral


def test_other_leaves_round_trip() -> None:
    markets = {m.market.id: m.market for m in load_genesis().markets}
    assert decode_markets(encode_markets(markets)) == markets
    markets[7] = Market(7, 2, 3, 1, 1, 50_000, 30_000, 0, 0, 10, 11, -(2**255), 2**64 - 1, -(2**31),
                        2**32 - 1, 2**128 - 1, 2**128 - 2, 2**128 - 1)
    assert decode_markets(encode_markets(markets)) == markets
    for pool in (0, -5, 2**255 - 1):
        s = System(3, 4, b"\x01" * 20, b"\x02" * 20, b"\x03" * 20, pool, abs(pool))
        assert System.decode(s.encode()) == s
    w = Withdrawal(5, b"\x03" * 20, b"\x04" * 20, 10**12)
    assert Withdrawal.decode(w.encode()) == w


def test_block_round_trip_and_hash() -> None:
    txs = (encode_tx(Deposit(0, b"\x01" * 20, 9)),)
    receipts = (Receipt(keccak(txs[0]), False, "DepositOutOfOrder", "index 0"),)
    g = genesis_block(keccak(b"root"))
    block = Block(make_header(1, g.hash, 5, 6, txs, receipts, keccak(b"r2")), txs, receipts)
    again = Block.decode(block.encode())
    assert again == block and again.hash == block.hash != g.hash


_INT256 = st.integers(-(2**255), 2**255 - 1)


@given(
    collateral=_INT256,
    nonce=st.integers(0, 2**64 - 1),
    positions=st.lists(
        st.tuples(st.integers(0, 2**32 - 1), st.integers(-(2**127), 2**127 - 1), _INT256, _INT256,
                  _INT256),
        max_size=6,
    ),
)
def test_account_leaf_encoding_matches_eth_abi(collateral, nonce, positions) -> None:
    """The hand-written account leaf codec is byte-for-byte eth_abi's."""
    from eth_abi import encode as abi_encode

    from node.state import ACCOUNT_TYPES, Account, Position

    acc = Account(collateral, nonce, tuple(Position(*p) for p in positions))
    raw = acc.encode()
    assert raw == abi_encode(ACCOUNT_TYPES, [collateral, nonce, positions])
    assert Account.decode(raw) == acc
    assert abi_decode(ACCOUNT_TYPES, raw) == (collateral, nonce, tuple(positions))


def test_account_leaf_encoding_refuses_out_of_range() -> None:
    from node.state import Account, Position

    for acc in (Account(2**255), Account(0, 2**64), Account(0, 0, (Position(2**32, 1, 1),)),
                Account(0, 0, (Position(1, 2**127, 1),)),
                Account(0, 0, (Position(1, 1, -(2**255) - 1),)),
                Account(0, 0, (Position(1, 1, 1, 2**255),))):
        with pytest.raises(OverflowError):
            acc.encode()
    with pytest.raises(ValueError):
        Account.decode(Account(1, 1, (Position(1, 1, 1),)).encode()[:-1])


def test_order_hash_memo_is_per_domain() -> None:
    """The order-hash memo never answers one domain's hash for another."""
    other = Domain(DOMAIN.chain_id + 1, DOMAIN.verifying_contract)
    order = Order(SIGNER.address, 1, True, 166621, 10_000, 7, 1_800_000_000)
    first, second = order_hash(DOMAIN, order), order_hash(other, order)
    assert first != second
    assert (order_hash(DOMAIN, order), order_hash(other, order)) == (first, second)
    assert second == _full_digest(typed_data(other, "Order", order_message(order)))


def test_keccak_hasher_and_key_memos_match_keccak() -> None:
    from node.crypto import keccak_256
    from node.state import account_key, order_key

    for data in (b"", b"\x01" * 20, bytes(range(64)), b"x" * 200):
        assert keccak_256(data).digest() == keccak(data)
    address = SIGNER.address
    assert account_key(address) == account_key(address) == keccak(b"\x01" + address)
    assert order_key(b"\x07" * 32) == order_key(b"\x07" * 32) == keccak(b"\x03" + b"\x07" * 32)


@given(
    st.integers(-(2**100), 2**100),
    st.lists(st.tuples(st.integers(0, 5), st.integers(-(10**9), 10**9), _INT256), max_size=4,
             unique_by=lambda p: p[0]),
    st.tuples(st.integers(0, 5), st.integers(-(10**9), 10**9), _INT256),
    st.integers(-(10**12), 10**12),
)
def test_account_traded_is_collateral_then_position(collateral, positions, pos, cash) -> None:
    """``Account.traded`` (one step, the STF's fill path) equals changing the
    collateral and then ``with_position`` as two steps: positions stay
    sorted by market, a zero size drops the position."""
    acc = Account(collateral, 3, tuple(sorted((Position(*p) for p in positions),
                                              key=lambda p: p.market)))
    new = Position(*pos)
    expected_positions = sorted([p for p in acc.positions if p.market != new.market]
                                + ([new] if new.size else []), key=lambda p: p.market)
    expected = Account(collateral + cash, 3, tuple(expected_positions))
    assert acc.traded(cash, new) == expected
    assert Account(collateral + cash, 3, acc.positions).with_position(new) == expected
