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
# dispute parameters, fixed at deployment like the windows (DisputeGame and
# Rollup constructors): degree k, party clock s, bonds wei, max drift s
DISPUTE_KEYS = ("dissection_degree", "clock", "challenger_bond", "proposer_bond", "max_drift")
DEPLOY_KEYS = WINDOW_KEYS + DISPUTE_KEYS


@dataclass(frozen=True)
class Requested:
    """What the command line asks for; None = not given (take the stored value).

    ``genesis``: the genesis JSON object (None: not given); windows, clock
    and max drift in seconds, bonds in wei.
    """

    genesis: dict[str, Any] | None
    preset: str | None
    challenge_window: int | None
    inclusion_window: int | None
    escape_delay: int | None
    dissection_degree: int | None = None
    clock: int | None = None
    challenger_bond: int | None = None
    proposer_bond: int | None = None
    max_drift: int | None = None


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
    """Settlement windows and dispute parameters of a new datadir: the preset
    (default devnet), then flags (``DEPLOY_KEYS``, the keyword arguments of
    ``l1_stub.client.deploy``).

    Raises ValueError for an unknown preset or a value out of range."""
    from l1_stub.client import DISSECTION_DEGREES, PRESETS

    preset = requested.preset or "devnet"
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; one of {sorted(PRESETS)}")
    p = PRESETS[preset]
    out = {}
    for key in DEPLOY_KEYS:
        value = getattr(requested, key)
        out[key] = getattr(p, key) if value is None else int(value)
        if out[key] < 0:
            raise ValueError(f"{key} must be >= 0")
    if out["dissection_degree"] not in DISSECTION_DEGREES:
        raise ValueError("dissection_degree must be 2..16")
    if out["clock"] == 0:
        raise ValueError("clock must be >= 1 second")
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
    for key in DEPLOY_KEYS:
        value = getattr(requested, key)
        if value is None and key not in asked:
            continue
        want = int(value) if value is not None else asked[key]
        if key in stored and int(stored[key]) != want:
            flag = "--" + key.replace("_", "-")
            unit = " wei" if key.endswith("_bond") else "" if key == "dissection_degree" else " s"
            raise DatadirMismatch(
                f"the datadir's Rollup was deployed with {key} {stored[key]}{unit}, not "
                f"{want}{unit} "
                f"({flag} or --preset); the contract cannot change it: restart without the "
                "flag or use a new --datadir"
            )
