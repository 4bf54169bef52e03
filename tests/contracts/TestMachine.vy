# pragma version ~=0.4.3
"""
@title Test machine for the dispute game (tests only, never deployed by derivnet)
@notice A deterministic stand-in for the one-step prover, like the OP
        Stack's AlphabetVM: the post root of a step is
        keccak256(pre_root || keccak256(timestamp u64 || tx)). Same ABI as
        OneStepProver.prove_step.
"""

MAX_WITNESS: constant(uint256) = 90112


@view
@external
def prove_step(
    pre_root: bytes32,
    timestamp: uint64,
    step_tx: Bytes[261],
    domain_separator: bytes32,
    witness: Bytes[MAX_WITNESS],
) -> bytes32:
    return keccak256(concat(pre_root, keccak256(concat(convert(timestamp, bytes8), step_tx))))
