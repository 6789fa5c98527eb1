#!/usr/bin/env python3
"""Drives a gateway with a standard Open Inference Protocol client from PyPI (tritonclient's
HTTP client): health, readiness, metadata, JSON inference, a pinned version and an error, then
the binary tensor data extension (binary inputs, binary outputs, both) against JSON inference.

Usage: oip_client_check.py HOST:PORT MODEL N_FEATURES [binary OUTPUT [EXPECTED,...]]
With `binary`, only the binary checks run, reading output OUTPUT (and, given EXPECTED, checking
the classes of its rows). Prints one line per check and exits non-zero on the first failure.
Used by the server's integration tests (crates/server/tests/it/oip_client.rs, mlserver.rs).
"""

import sys

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException


ROW = [1.0, 50.0, 2.0, 40.0, 1.0, 2.0, 1.0, 1000.0]


def binary_checks(client, model, rows, input_name, output, expected=None) -> None:
    """The same rows as JSON and in every binary combination give the same answer."""

    def infer(binary_in, binary_out):
        tensor = httpclient.InferInput(input_name, list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows, binary_data=binary_in)
        wanted = [httpclient.InferRequestedOutput(output, binary_data=binary_out)]
        result = client.infer(model, [tensor], outputs=wanted)
        got = result.get_output(output)
        assert got is not None, result.get_response()
        is_binary = "binary_data_size" in got.get("parameters", {})
        assert is_binary == binary_out, (binary_out, got)
        return result.as_numpy(output)

    plain = infer(False, False)
    assert plain is not None and plain.shape[0] == rows.shape[0], plain
    if expected is not None:
        assert plain.reshape(-1).tolist() == expected, (plain.tolist(), expected)
    for binary_in, binary_out in [(True, False), (False, True), (True, True)]:
        got = infer(binary_in, binary_out)
        assert got.dtype == plain.dtype and np.array_equal(got, plain), (
            binary_in,
            binary_out,
            got,
            plain,
        )
    print("binary infer ok", plain.reshape(-1).tolist())


def main() -> int:
    url, model, n_features = sys.argv[1], sys.argv[2], int(sys.argv[3])
    client = httpclient.InferenceServerClient(url=url)
    if len(sys.argv) > 4 and sys.argv[4] == "binary":
        expected = [int(x) for x in sys.argv[6].split(",")] if len(sys.argv) > 6 else None
        rows = np.array(sys_rows(n_features, expected), dtype=np.float32)
        meta = client.get_model_metadata(model)
        input_name = meta["inputs"][0]["name"] if meta.get("inputs") else "input"
        binary_checks(client, model, rows, input_name, sys.argv[5], expected)
        return 0
    assert client.is_server_live(), "is_server_live"
    print("live ok")
    assert client.is_server_ready(), "is_server_ready"
    print("ready ok")
    assert client.is_model_ready(model), "is_model_ready"
    print("model ready ok")
    server = client.get_server_metadata()
    assert server["name"] == "switchyard", server
    print("server metadata ok")
    meta = client.get_model_metadata(model)
    assert meta["name"] == model, meta
    assert meta["inputs"][0]["shape"] == [-1, n_features], meta
    print("model metadata ok")

    rows = np.array([ROW[:n_features]] * 3, dtype=np.float32)
    tensor = httpclient.InferInput(meta["inputs"][0]["name"], list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows, binary_data=False)
    result = client.infer(model, [tensor])
    labels = result.as_numpy("label")
    assert labels is not None and labels.shape == (3,), labels
    print("infer ok", labels.tolist())
    version = meta["versions"][-1]
    pinned = client.infer(model, [tensor], model_version=version)
    assert pinned.get_response()["model_version"] == version, pinned.get_response()
    print("pinned infer ok", version)

    try:
        client.infer("no-such-model", [tensor])
    except InferenceServerException as e:
        assert "no model named 'no-such-model'" in e.message(), e.message()
        print("error ok:", e.message())
    else:
        raise AssertionError("an unknown model must fail")

    binary_checks(client, model, rows, meta["inputs"][0]["name"], "label")
    # The binary request pinned to a version is answered by that version.
    tensor = httpclient.InferInput(meta["inputs"][0]["name"], list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows, binary_data=True)
    pinned = client.infer(model, [tensor], model_version=version)
    assert pinned.get_response()["model_version"] == version, pinned.get_response()
    print("pinned binary infer ok", version)
    return 0


def sys_rows(n_features, expected):
    """Rows for the binary-only mode: the fixture rows given on stdin (JSON), else ROW x3."""
    if expected is not None:
        import json

        rows = json.load(sys.stdin)
        assert len(rows) == len(expected), (len(rows), len(expected))
        return rows
    return [ROW[:n_features]] * 3


if __name__ == "__main__":
    sys.exit(main())
