# pragma version 0.4.3
# pragma optimize codesize
"""
@title derivnet one-step Deleverage transition
@notice Re-executes the Deleverage (0x08) rule of the state transition
        function (node/stf.py, node/risk.py; docs/protocol.md "State
        transition rules", "Liquidate and Deleverage") on leaf values, for
        the one-step prover. OneStepProver.prove_step hands a Deleverage to
        this contract's prove_state_step (same arguments and result), which
        proves the leaves against the pre-state root with the shared
        multiproof module smt.vy and returns the post-state root; a
        transaction that breaks a rule leaves the root as it was.
"""

import smt
import perp

# ---------------------------------------------------------------- Deleverage

@pure
@internal
def _deleverage(txp: Bytes[perp.MAX_TXP], system: Bytes[perp.SYSTEM_LEAF_BYTES], markets: Bytes[perp.MARKETS_LEAF_BYTES],
                liquidated_leaf: Bytes[perp.ACCOUNT_LEAF_BYTES], offset_leaf: Bytes[perp.ACCOUNT_LEAF_BYTES],
                fee_leaf: Bytes[perp.ACCOUNT_LEAF_BYTES]) -> (bool, bytes32, bytes32, bytes32, bytes32, bytes32):
    """
    @dev The Deleverage rule (docs/protocol.md "State transition rules").
         Returns (ok, new system, markets, liquidated, offset and fee
         account leaf hashes); ok=False (hashes empty) when a rule fails.
    """
    liquidated: address = perp._address(txp, 1)
    offset: address = perp._address(txp, 21)
    market: uint256 = perp._uint(txp, 41, 4)
    size: uint256 = perp._uint(txp, 45, 8)
    # 1 UnknownMarket, 2 SelfTrade, 3 ZeroFillSize, 4 InvalidStepSize
    table: DynArray[perp.Mkt, perp.MAX_MARKETS] = perp._table(markets)
    k: uint256 = perp._find(table, market)
    if k == perp.MAX_MARKETS or offset == liquidated or size == 0:
        return False, empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32)
    mk: perp.Mkt = table[k]
    at: uint256 = 64 + k * perp.MARKET_ROW_BYTES  # the market's row in the leaf
    if size % convert(extract32(markets, at + 32 * perp.W_STEP), uint256) != 0:
        return False, empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32)
    # 5 NotDeleveragable: E < 0 and insurance_fund + E < 0
    before: perp.Account = perp._decode(liquidated_leaf)
    oi: int256 = convert(extract32(markets, at + 32 * perp.W_OPEN_INTEREST), int256)
    pre: perp.Risk = perp._risk(before, table)
    if pre.equity >= 0 or convert(extract32(system, 6 * 32), int256) + pre.equity >= 0:
        return False, empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32)
    # 6 NotAReduction
    other: perp.Account = perp._decode(offset_leaf)
    held: int256 = perp._size_in(before, market)
    opposite: int256 = perp._size_in(other, market)
    q: int256 = convert(size, int256)
    if held == 0 or opposite == 0 or (held > 0) == (opposite > 0) or q > min(abs(held), abs(opposite)):
        return False, empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32)
    # no maintenance margin (no oracle price): no bankruptcy price, not deleveragable
    if pre.maintenance == 0:
        return False, empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32)
    # the liquidated side's bankruptcy price (node/risk.py deleverage_price)
    delta: int256 = -q
    if held < 0:
        delta = q
    quote: int256 = perp._bankruptcy_quote(mk, held, delta, pre)
    m: int256 = 0
    n: int256 = 0
    m, n = perp._scale(mk.decimals)
    price: int256 = 0
    if delta < 0:
        price = perp._ceil_div(quote * n, q * m)
    else:
        price = perp._floor_div(-quote * n, q * m)
    price = max(price, 0)
    pay: int256 = 0
    receive: int256 = 0
    pay, receive = perp._notional(q, price, mk.decimals)
    # settlement (liquidated, then offset), the trade, no fees
    after: perp.Account = empty(perp.Account)
    funding: int256 = 0
    owed: int256 = 0
    if delta < 0:
        after, funding = perp._settle_and_trade(before, mk, delta, -receive, receive)
        other, owed = perp._settle_and_trade(other, mk, q, pay, -pay)
    else:
        after, funding = perp._settle_and_trade(before, mk, delta, pay, -pay)
        other, owed = perp._settle_and_trade(other, mk, -q, -receive, receive)
    funding += owed
    new_oi: int256 = oi + max(held + delta, 0) - max(held, 0) + max(opposite - delta, 0) - max(opposite, 0)
    # the rounding dust to the fee account
    income: int256 = pay - receive
    fee_account: address = convert(convert(convert(extract32(system, 3 * 32), uint256), uint160), address)
    if fee_account == liquidated:
        after.collateral += income
    elif fee_account == offset:
        other.collateral += income
    # 7 both accounts end no riskier (StarkEx)
    if not perp._no_riskier(before, after, table):
        return False, empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32)
    if not perp._no_riskier(perp._decode(offset_leaf), other, table):
        return False, empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32)
    fee_hash: bytes32 = empty(bytes32)
    if fee_account == liquidated:
        fee_hash = perp._hash(after)
    elif fee_account == offset:
        fee_hash = perp._hash(other)
    else:
        fee: perp.Account = perp._decode(fee_leaf)
        fee.collateral += income
        fee_hash = perp._hash(fee)
    at += perp.W_OPEN_INTEREST * 32
    return True, \
        keccak256(concat(slice(system, 0, 160), convert(convert(extract32(system, 160), int256) + funding, bytes32),
                         slice(system, 192, 32))), \
        keccak256(concat(slice(markets, 0, at), convert(new_oi, bytes32), slice(markets, at + 32, len(markets) - at - 32))), \
        perp._hash(after), perp._hash(other), fee_hash


# ---------------------------------------------------------------- the step

@pure
@internal
def _leaf_hash(leaf: Bytes[perp.MARKETS_LEAF_BYTES]) -> bytes32:
    # keccak256(value); empty(bytes32) for an absent leaf (empty bytes)
    if len(leaf) == 0:
        return empty(bytes32)
    return keccak256(leaf)


@pure
@internal
def _account_key(who: address) -> uint256:
    return convert(keccak256(concat(b"\x01", convert(who, bytes20))), uint256)


@view
@external
def prove_state_step(pre_root: bytes32, timestamp: uint64, encoded_tx: Bytes[perp.MAX_TX_BYTES],
                     domain_separator: bytes32, witness: Bytes[perp.MAX_WITNESS]) -> bytes32:
    """
    @notice OneStepProver.prove_step for a Deleverage (same arguments and
            result): the post-state root, pre_root if the transaction fails
            a rule. Witness slots as docs/protocol.md "Witness": system,
            markets, liquidated account, offset account, fee account.
    @dev Reverts "osp: bad tx" for another type or a wrong length, "osp: no
         system leaf", "osp: position in an unknown market", and the tree's
         "osp: ..." for a witness that does not prove against pre_root.
    """
    size: uint256 = len(encoded_tx)
    assert size > 0, "osp: bad tx"
    txp: Bytes[perp.MAX_TXP] = concat(encoded_tx, empty(bytes32))
    kind: uint256 = perp._uint(txp, 0, 1)
    assert kind == perp.TX_DELEVERAGE and size == perp.DELEVERAGE_TX_BYTES, "osp: bad tx"
    system: Bytes[perp.SYSTEM_LEAF_BYTES] = b""
    markets: Bytes[perp.MARKETS_LEAF_BYTES] = b""
    first: Bytes[perp.ACCOUNT_LEAF_BYTES] = b""
    second: Bytes[perp.ACCOUNT_LEAF_BYTES] = b""
    fee: Bytes[perp.ACCOUNT_LEAF_BYTES] = b""
    tree: Bytes[smt.MAX_TREE_BYTES] = b""
    ok: bool = False
    new_system: bytes32 = empty(bytes32)
    new_markets: bytes32 = empty(bytes32)
    new_first: bytes32 = empty(bytes32)
    new_second: bytes32 = empty(bytes32)
    new_fee: bytes32 = empty(bytes32)
    slots: DynArray[smt.Slot, smt.MAX_SLOTS] = []
    system, markets, first, second, fee, tree = abi_decode(
        witness, (Bytes[perp.SYSTEM_LEAF_BYTES], Bytes[perp.MARKETS_LEAF_BYTES], Bytes[perp.ACCOUNT_LEAF_BYTES],
                  Bytes[perp.ACCOUNT_LEAF_BYTES], Bytes[perp.ACCOUNT_LEAF_BYTES], Bytes[smt.MAX_TREE_BYTES]))
    assert len(system) == perp.SYSTEM_LEAF_BYTES, "osp: no system leaf"
    ok, new_system, new_markets, new_first, new_second, new_fee = self._deleverage(
        txp, system, markets, first, second, fee)
    fee_account: address = convert(convert(convert(extract32(system, 3 * 32), uint256), uint160), address)
    slots.append(smt.Slot(key=convert(perp.SYSTEM_KEY, uint256), old=keccak256(system), new=new_system))
    slots.append(smt.Slot(key=convert(perp.MARKETS_KEY, uint256), old=self._leaf_hash(markets), new=new_markets))
    slots.append(smt.Slot(key=self._account_key(perp._address(txp, 1)), old=self._leaf_hash(first), new=new_first))
    slots.append(smt.Slot(key=self._account_key(perp._address(txp, 21)), old=self._leaf_hash(second), new=new_second))
    slots.append(smt.Slot(key=self._account_key(fee_account), old=self._leaf_hash(fee), new=new_fee))
    return smt.root_after(pre_root, ok, slots, tree)
