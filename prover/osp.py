"""Deploy the one-step prover contracts on an L1 and call ``prove_step``.

``deploy_prover(w3, key)`` deploys OneStepFill, OneStepRisk,
OneStepLiquidate and OneStepDeleverage, then OneStepProver bound to them (docs/protocol.md "One-step proof"); ``OneStepProverClient`` calls
``prove_step`` with ``eth_call`` (it is a view) and measures its gas with
``eth_estimateGas``. ``compile_with_imports`` compiles a Vyper source that
imports modules of ``l1_stub/contracts`` from another folder (test
contracts such as tests/contracts/SmtHarness.vy).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_utils import to_checksum_address
from web3 import Web3
from web3.exceptions import ContractLogicError

from l1_stub.client import send_transaction, wait_receipt
from l1_stub.contracts import (
    CONTRACT_NAMES,
    CONTRACTS_DIR,
    EVM_VERSION,
    CompiledContract,
    compile_contract,
)
from node.eip712 import Domain
from node.transactions import Transaction, encode_tx

PROVER_NAME = "OneStepProver"
FILL_NAME = "OneStepFill"
RISK_NAME = "OneStepRisk"
LIQUIDATE_NAME = "OneStepLiquidate"
DELEVERAGE_NAME = "OneStepDeleverage"
# creation gas of a contract up to the 24,576-byte limit (200 gas a byte + init)
DEPLOY_GAS = 8_000_000


class ProofReverted(RuntimeError):
    """``prove_step`` reverted; ``reason`` is the revert string (``osp: ...``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ProverDeployment:
    """Checksum addresses of the deployed prover contracts."""

    prover: str
    fill: str
    risk: str
    liquidate: str
    deleverage: str


def fill_available() -> bool:
    """Whether l1_stub/contracts has the OneStepFill contract."""
    return FILL_NAME in CONTRACT_NAMES and (CONTRACTS_DIR / f"{FILL_NAME}.vy").exists()


def deploy_prover(w3: Web3, key: bytes, fill: str | None = None, risk: str | None = None,
                  liquidate: str | None = None, deleverage: str | None = None) -> ProverDeployment:
    """Deploy OneStepFill (unless ``fill``, its address, is given),
    OneStepRisk (unless ``risk`` is given), OneStepLiquidate (unless
    ``liquidate`` is given), OneStepDeleverage (unless ``deleverage`` is
    given) and OneStepProver(fill, risk, liquidate, deleverage) from
    ``key``; waits for every receipt (an auto-mining or interval-mining
    chain). Without a OneStepFill contract (``fill_available()`` False) and
    no ``fill``, the prover is bound to the zero address: every type but
    Fill works."""
    if fill is None:
        fill = "0x" + "00" * 20
        if fill_available():
            fill = deploy_compiled(w3, key, compile_contract(FILL_NAME)).address
    if risk is None:
        risk = deploy_compiled(w3, key, compile_contract(RISK_NAME)).address
    if liquidate is None:
        liquidate = deploy_compiled(w3, key, compile_contract(LIQUIDATE_NAME)).address
    if deleverage is None:
        deleverage = deploy_compiled(w3, key, compile_contract(DELEVERAGE_NAME)).address
    fill = to_checksum_address(fill)
    risk = to_checksum_address(risk)
    liquidate = to_checksum_address(liquidate)
    deleverage = to_checksum_address(deleverage)
    prover = deploy_compiled(w3, key, compile_contract(PROVER_NAME), (fill, risk, liquidate, deleverage))
    return ProverDeployment(to_checksum_address(prover.address), fill, risk, liquidate, deleverage)


class OneStepProverClient:
    """Calls of a deployed OneStepProver."""

    def __init__(self, w3: Web3, address: str) -> None:
        from l1_stub.contracts import load_contract

        abi, _ = load_contract(PROVER_NAME)
        self.w3 = w3
        self.contract = w3.eth.contract(address=to_checksum_address(address), abi=abi)

    def _fn(self, pre_root: bytes, timestamp: int, tx: Transaction | bytes, domain: Domain,
            witness: bytes) -> Any:
        encoded = tx if isinstance(tx, bytes | bytearray) else encode_tx(tx)
        return self.contract.functions.prove_step(
            bytes(pre_root), timestamp, bytes(encoded), domain.separator, bytes(witness)
        )

    def prove_step(self, pre_root: bytes, timestamp: int, tx: Transaction | bytes,
                   domain: Domain, witness: bytes) -> bytes:
        """The post-state root (32 bytes) of one step; ProofReverted with
        the contract's reason if the witness or the transaction is bad."""
        try:
            return bytes(self._fn(pre_root, timestamp, tx, domain, witness).call())
        except ContractLogicError as exc:
            message = str(getattr(exc, "message", None) or exc)
            raise ProofReverted(message.removeprefix("execution reverted: ")) from exc

    def gas(self, pre_root: bytes, timestamp: int, tx: Transaction | bytes, domain: Domain,
            witness: bytes) -> int:
        """eth_estimateGas of a transaction calling ``prove_step`` (21,000
        intrinsic and the calldata included)."""
        return int(self._fn(pre_root, timestamp, tx, domain, witness).estimate_gas())


def compile_with_imports(path: Path | str) -> CompiledContract:
    """Compile the Vyper file ``path`` with ``l1_stub/contracts`` and its own
    folder on the import path (no caching: for tests)."""
    import vyper
    from vyper.compiler.input_bundle import FilesystemInputBundle
    from vyper.compiler.settings import Settings

    path = Path(path).resolve()
    source = path.read_text()
    out = vyper.compile_code(
        source,
        contract_path=str(path),
        input_bundle=FilesystemInputBundle([path.parent, CONTRACTS_DIR]),
        output_formats=["abi", "bytecode", "bytecode_runtime"],
        settings=Settings(evm_version=EVM_VERSION),
    )
    return CompiledContract(path.stem, out["abi"], out["bytecode"], out["bytecode_runtime"],
                            hashlib.sha256(source.encode()).hexdigest())


def deploy_compiled(w3: Web3, key: bytes, compiled: CompiledContract, args: tuple[Any, ...] = ()
                    ) -> Any:
    """Deploy ``compiled`` with constructor ``args`` (gas: DEPLOY_GAS, room
    for a contract at the EIP-170 limit); returns the web3 contract."""
    factory = w3.eth.contract(abi=compiled.abi, bytecode=compiled.bytecode)
    data = bytes.fromhex(factory.constructor(*args).data_in_transaction[2:])
    receipt = wait_receipt(w3, send_transaction(w3, key, to=None, data=data, gas=DEPLOY_GAS))
    return w3.eth.contract(address=receipt["contractAddress"], abi=compiled.abi)
