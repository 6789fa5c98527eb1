#!/usr/bin/env python3
"""Drives a gateway with a standard Open Inference Protocol client from PyPI (tritonclient's
HTTP client): health, readiness, metadata, JSON inference, a pinned version and an error.

Usage: oip_client_check.py HOST:PORT MODEL N_FEATURES
Prints one line per check and exits non-zero on the first failure. Used by the server's
integration tests (crates/server/tests/it/oip_client.rs).
"""

import sys

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException


def main() -> int:
    url, model, n_features = sys.argv[1], sys.argv[2], int(sys.argv[3])
    client = httpclient.InferenceServerClient(url=url)
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

    rows = np.array(
        [[1.0, 50.0, 2.0, 40.0, 1.0, 2.0, 1.0, 1000.0][:n_features]] * 3, dtype=np.float32
    )
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
