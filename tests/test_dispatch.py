"""node.server's fast paths keep the answers of the slow ones: the
bracket-peeling nesting depth, decoding, and the cached argument check
giving jsonrpcserver's -32602 text."""

from __future__ import annotations

import json
from typing import Any

from jsonrpcserver import dispatch

from node.rpc import _wrap
from node.server import MAX_DEPTH, JsonRpcApp, _plain_depth, decode_frame, nesting_depth


def test_big_integers_and_odd_json_decode_as_the_stdlib_does() -> None:
    for text in ('{"a": 123456789012345678901234567890}', '[-18446744073709551617, 1.5]',
                 '{"s": "\\ud800"}', '[NaN]', '{"x": "0x12345678901234567890123456"}'):
        assert decode_frame(text) == json.loads(text) or text == "[NaN]"


def test_fast_nesting_depth_agrees_or_defers() -> None:
    cases = {
        '[{"k": []}, {"a": [[{}]]}]': 5,
        '["x", {"s": "", "t": "y"}]': 2,
        "[" * MAX_DEPTH + "]" * MAX_DEPTH: MAX_DEPTH,
        '{"a": "[x]", "b": [[[]]]}': None,  # a bracket in a string: counted exactly
        '["\\"[", [1]]': None,  # an escape
        "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1): None,  # too deep
        "[[[": None,  # unbalanced
    }
    for text, fast in cases.items():
        assert _plain_depth(text) == fast, text
        if fast is not None:
            assert nesting_depth(text + " " * 200 + "[]" * 70) == fast  # past the count shortcut


def _app() -> JsonRpcApp:
    def l2_two(a: Any, b: Any = 0) -> Any:
        return [a, b]

    def l2_fail() -> Any:
        raise RuntimeError("boom")

    return JsonRpcApp({"l2_two": _wrap(l2_two), "l2_fail": _wrap(l2_fail)})


def test_dispatch_answers_as_jsonrpcserver() -> None:
    app = _app()
    requests = [
        {"jsonrpc": "2.0", "id": 1, "method": "l2_two", "params": [1]},
        {"jsonrpc": "2.0", "id": 2, "method": "l2_two", "params": [1, 2, 3]},
        {"jsonrpc": "2.0", "id": 3, "method": "l2_two", "params": [1, 2, 3]},  # cached
        {"jsonrpc": "2.0", "id": 4, "method": "l2_two", "params": {"a": 1}},
        {"jsonrpc": "2.0", "id": 5, "method": "l2_nope"},
        {"jsonrpc": "2.0", "id": 6, "method": "l2_fail"},
        {"jsonrpc": "2.0", "method": "l2_two", "params": [1]},  # notification
    ]
    for request in requests:
        expected = dispatch(json.dumps(request), methods=app.methods)
        got = app.dispatch_one(request)
        assert (json.loads(expected) if expected else None) == got, request
