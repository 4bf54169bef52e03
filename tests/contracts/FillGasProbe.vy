# pragma version 0.4.3
"""
@title Gas probe for OneStepFill (tests only)
@notice Calls OneStepFill.transition as the one-step prover would (a
        STATICCALL from another contract) and returns the gas that call
        used, ABI encoding of the arguments and decoding of the results
        included.
"""

ACCOUNT_LEAF_BYTES: constant(uint256) = 4 * 32 + 5 * 32 * 64
MARKETS_LEAF_BYTES: constant(uint256) = 2 * 32 + 18 * 32 * 64


interface OneStepFill:
    def transition(
        fill_tx: Bytes[261],
        timestamp: uint64,
        domain_separator: bytes32,
        fee_account: address,
        maker_account: Bytes[ACCOUNT_LEAF_BYTES],
        taker_account: Bytes[ACCOUNT_LEAF_BYTES],
        fee_account_leaf: Bytes[ACCOUNT_LEAF_BYTES],
        maker_filled: Bytes[32],
        taker_filled: Bytes[32],
        markets: Bytes[MARKETS_LEAF_BYTES],
    ) -> (bool, bytes32, bytes32, bytes32, bytes32, bytes32, bytes32, int256): view


@view
@external
def measure(
    target: address,
    fill_tx: Bytes[261],
    timestamp: uint64,
    domain_separator: bytes32,
    fee_account: address,
    maker_account: Bytes[ACCOUNT_LEAF_BYTES],
    taker_account: Bytes[ACCOUNT_LEAF_BYTES],
    fee_account_leaf: Bytes[ACCOUNT_LEAF_BYTES],
    maker_filled: Bytes[32],
    taker_filled: Bytes[32],
    markets: Bytes[MARKETS_LEAF_BYTES],
) -> (uint256, bool):
    start: uint256 = msg.gas
    ok: bool = False
    a: bytes32 = empty(bytes32)
    b: bytes32 = empty(bytes32)
    c: bytes32 = empty(bytes32)
    d: bytes32 = empty(bytes32)
    e: bytes32 = empty(bytes32)
    f: bytes32 = empty(bytes32)
    funding: int256 = 0
    ok, a, b, c, d, e, f, funding = staticcall OneStepFill(target).transition(
        fill_tx, timestamp, domain_separator, fee_account, maker_account, taker_account,
        fee_account_leaf, maker_filled, taker_filled, markets
    )
    return start - msg.gas, ok
