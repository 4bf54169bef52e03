"""Compile the L1 contracts (Vyper) and export their ABIs.

``load_contract(name)`` compiles ``l1_stub/contracts/<name>.vy`` with the
``vyper`` package (0.4.3, EVM version Cancun so the bytecode also runs on
older external nodes) and caches the result in-process, keyed by the source
hash, and on disk (``~/.cache/derivnet/compiled``, or
``$DERIVNET_COMPILE_CACHE``; ``off`` disables it), keyed by every source
file and the compiler version, so a contract compiles once per machine.

Compile-time limits (``MAX_BATCH_BYTES``, ``MAX_STEPS``,
``MAX_FINALIZE_ON_FREEZE`` of the Rollup) can be overridden with ``overrides={"MAX_STEPS": 64}``: a knob for protocol
experiments and for tests that hit the limits cheaply. ``MERKLE_DEPTH``
follows ``MAX_STEPS``.

``write_abis()`` writes ``<name>.json`` ABI files for users and tools
(cast, web3 scripts) to ``abi_dir()``: ``$DERIVNET_ABI_DIR`` if set, else
``~/.cache/derivnet/abi``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONTRACTS_DIR = Path(__file__).resolve().parent / "contracts"
CONTRACT_NAMES = ("USDC", "Rollup", "DisputeGame", "OneStepProver", "OneStepFill", "OneStepRisk",
                  "OneStepLiquidate", "OneStepDeleverage")
# contracts that only tests deploy (tests/contracts/, e.g. the dispute game's
# test machine): compiled on demand by name, never in write_abis
TEST_CONTRACTS_DIR = Path(__file__).resolve().parent.parent / "tests" / "contracts"
TEST_CONTRACT_NAMES = ("TestMachine",)
EVM_VERSION = "cancun"

_lock = threading.Lock()
_cache: dict[tuple[str, str], CompiledContract] = {}

# constants that may be overridden, per contract
OVERRIDABLE = {"Rollup": ("MAX_BATCH_BYTES", "MAX_STEPS", "MAX_FINALIZE_ON_FREEZE")}


@dataclass(frozen=True)
class CompiledContract:
    """Compiler output for one contract: ABI (JSON list), creation bytecode
    (0x-prefixed hex), runtime bytecode and the sha256 of the source."""

    name: str
    abi: list[dict[str, Any]]
    bytecode: str
    bytecode_runtime: str
    source_sha256: str


def source_path(name: str) -> Path:
    """Path of the Vyper source of contract ``name``."""
    if name in TEST_CONTRACT_NAMES:
        return TEST_CONTRACTS_DIR / f"{name}.vy"
    if name not in CONTRACT_NAMES:
        raise KeyError(f"unknown contract {name!r}; known: {', '.join(CONTRACT_NAMES)}")
    return CONTRACTS_DIR / f"{name}.vy"


def _set_constant(source: str, constant: str, value: int) -> str:
    pattern = re.compile(
        rf"^({constant}: (?:public\()?constant\(uint256\)\)?) = .*$", re.MULTILINE
    )
    new, count = pattern.subn(rf"\g<1> = {int(value)}", source)
    if count != 1:
        raise ValueError(f"constant {constant} not found exactly once")
    return new


def _apply_overrides(name: str, source: str, overrides: Mapping[str, int]) -> str:
    allowed = OVERRIDABLE.get(name, ())
    for constant, value in overrides.items():
        if constant not in allowed:
            raise KeyError(f"{name}: cannot override {constant!r}; allowed: {allowed}")
        if int(value) < 1:
            raise ValueError(f"{constant} must be positive")
        source = _set_constant(source, constant, int(value))
    if "MAX_STEPS" in overrides:
        depth = max(1, (int(overrides["MAX_STEPS"]) - 1).bit_length())
        source = _set_constant(source, "MERKLE_DEPTH", depth)
    return source


def compile_contract(name: str, overrides: Mapping[str, int] | None = None) -> CompiledContract:
    """Compile (or fetch from the in-process cache) contract ``name``, with
    optional constant ``overrides`` (see ``OVERRIDABLE``)."""
    path = source_path(name)
    source = path.read_text()
    if overrides:
        source = _apply_overrides(name, source, overrides)
    digest = hashlib.sha256(source.encode()).hexdigest()
    key = (name, digest)
    with _lock:
        cached = _cache.get(key)
        if cached is not None:
            return cached
        import vyper
        from vyper.compiler.settings import Settings

        disk = _disk_cache_path(name, source, vyper.__version__)
        out = _read_disk_cache(disk)
        if out is None:
            out = vyper.compile_code(
                source,
                contract_path=str(path),
                output_formats=["abi", "bytecode", "bytecode_runtime"],
                settings=Settings(evm_version=EVM_VERSION),
            )
            _write_disk_cache(disk, out)
        compiled = CompiledContract(
            name=name,
            abi=out["abi"],
            bytecode=out["bytecode"],
            bytecode_runtime=out["bytecode_runtime"],
            source_sha256=digest,
        )
        _cache[key] = compiled
        return compiled


def _disk_cache_path(name: str, source: str, vyper_version: str) -> Path | None:
    """Where the compiler output of this exact input is cached across
    processes (a devnet start otherwise spends ~5 s compiling): keyed by the
    source (overrides applied), every .vy/.vyi file of the contracts folder
    (imported modules), the vyper and EVM versions. None if
    ``$DERIVNET_COMPILE_CACHE`` is ``off``."""
    where = os.environ.get("DERIVNET_COMPILE_CACHE")
    if where == "off":
        return None
    h = hashlib.sha256(f"{name}|{vyper_version}|{EVM_VERSION}|".encode() + source.encode())
    for other in sorted(CONTRACTS_DIR.rglob("*.vy*")):
        h.update(str(other.relative_to(CONTRACTS_DIR)).encode() + b"|" + other.read_bytes())
    base = Path(where) if where else Path.home() / ".cache" / "derivnet" / "compiled"
    return base / f"{name}-{h.hexdigest()[:32]}.json"


def _read_disk_cache(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        out: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return out if {"abi", "bytecode", "bytecode_runtime"} <= out.keys() else None


def _write_disk_cache(path: Path | None, out: dict[str, Any]) -> None:
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({k: out[k] for k in ("abi", "bytecode", "bytecode_runtime")}))
        os.replace(tmp, path)  # atomic: concurrent processes never read half a file
    except OSError:
        pass  # a read-only home only costs the compile time


def load_contract(
    name: str, overrides: Mapping[str, int] | None = None
) -> tuple[list[dict[str, Any]], str]:
    """``(abi, creation bytecode hex)`` of contract ``name``."""
    compiled = compile_contract(name, overrides)
    return compiled.abi, compiled.bytecode


def abi_dir() -> Path:
    """Where ``write_abis`` puts the ABI files by default."""
    env = os.environ.get("DERIVNET_ABI_DIR")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "derivnet" / "abi"


def write_abis(directory: Path | str | None = None) -> dict[str, Path]:
    """Write ``<name>.json`` (the ABI) for every contract; returns name -> path."""
    target = Path(directory) if directory is not None else abi_dir()
    target.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in CONTRACT_NAMES:
        path = target / f"{name}.json"
        text = json.dumps(compile_contract(name).abi, indent=2) + "\n"
        if not path.exists() or path.read_text() != text:
            tmp = path.with_suffix(f".json.tmp{os.getpid()}")
            tmp.write_text(text)
            tmp.replace(path)
        paths[name] = path
    return paths
