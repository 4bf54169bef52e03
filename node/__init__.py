"""derivnet L2 node: ledger, state transition function, sparse Merkle tree,
L2 chain store, JSON-RPC server and the `derivnet` CLI.

The byte-level protocol lives in docs/protocol.md.
"""
