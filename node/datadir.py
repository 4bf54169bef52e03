"""What a datadir was created with, and the check that a restart asks for
the same thing.

A datadir's L2 store keeps the rollup config it was created with (chain ids,
contract addresses, genesis, preset and settlement windows). Restarting it
with another genesis file, another preset or other window flags would change
the chain id, market ids and roles under existing state, so it is refused;
flags left out on a restart take the stored values.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any


class DatadirMismatch(ValueError):
    """A restart asked for a genesis, preset or window other than the datadir's."""


WINDOW_KEYS = ("challenge_window", "inclusion_window", "escape_delay")


@dataclass(frozen=True)
class Requested:
    """What the command line asks for; None = not given (take the stored value).

    ``genesis``: the genesis JSON object (None: not given); windows in seconds.
    """

    genesis: dict[str, Any] | None
    preset: str | None
    challenge_window: int | None
    inclusion_window: int | None
    escape_delay: int | None


def read_genesis_json(path: str | Path | None) -> dict[str, Any]:
    """The genesis JSON object at ``path`` (None: the packaged default).

    Raises OSError or ValueError (not JSON) with the file named."""
    if path is None:
        text = resources.files("node").joinpath("genesis.json").read_text()
    else:
        text = Path(path).read_text()
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"genesis file {path}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"genesis file {path}: expected a JSON object")
    return data


def resolve_windows(requested: Requested) -> dict[str, int]:
    """Settlement windows of a new datadir: the preset (default devnet), then flags.

    Raises ValueError for an unknown preset or a negative window."""
    from l1_stub.client import PRESETS

    preset = requested.preset or "devnet"
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; one of {sorted(PRESETS)}")
    p = PRESETS[preset]
    out = {}
    for key in WINDOW_KEYS:
        value = getattr(requested, key)
        out[key] = getattr(p, key) if value is None else int(value)
        if out[key] < 0:
            raise ValueError(f"{key} must be >= 0 seconds")
    return out


def check_restart(stored: dict[str, Any], requested: Requested) -> None:
    """Refuse a restart whose explicit genesis, preset or windows differ from
    what the datadir was created with. Raises DatadirMismatch naming the flag."""
    if requested.genesis is not None and "genesis" in stored:
        from node.genesis import parse_genesis

        if parse_genesis(requested.genesis) != parse_genesis(stored["genesis"]):
            raise DatadirMismatch(
                "the datadir was created with another genesis (chain ids, roles or markets "
                "differ); restart without --genesis or with the same file, or use a new --datadir"
            )
    stored_preset = stored.get("preset")
    if requested.preset is not None and stored_preset is not None and requested.preset != stored_preset:
        raise DatadirMismatch(
            f"the datadir was created with --preset {stored_preset}, not {requested.preset}; "
            "restart without --preset or use a new --datadir"
        )
    asked = resolve_windows(requested) if requested.preset is not None else {}
    for key in WINDOW_KEYS:
        value = getattr(requested, key)
        if value is None and key not in asked:
            continue
        want = int(value) if value is not None else asked[key]
        if key in stored and int(stored[key]) != want:
            flag = "--" + key.replace("_", "-")
            raise DatadirMismatch(
                f"the datadir's Rollup was deployed with {key} {stored[key]} s, not {want} s "
                f"({flag} or --preset); the contract cannot change it: restart without the "
                "flag or use a new --datadir"
            )
