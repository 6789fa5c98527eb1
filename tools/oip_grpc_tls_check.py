#!/usr/bin/env python3
"""A standard Open Inference Protocol gRPC client (tritonclient) against a gateway's gRPC
endpoint over TLS with data-plane auth: the CA file as the client's root, the bearer token in
the call's metadata.

Usage: oip_grpc_tls_check.py HOST:PORT MODEL CA_FILE TOKEN
Prints one line per check and exits non-zero on the first failure. Used by the server's
integration tests (crates/server/tests/it/grpc.rs).
"""

import sys

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

ROW = [1.0, 50.0, 2.0, 40.0, 1.0, 2.0, 1.0, 1000.0]


def main() -> int:
    url, model, ca_file, token = sys.argv[1:5]
    # tritonclient reads the root certificates from this path.
    client = grpcclient.InferenceServerClient(url=url, ssl=True, root_certificates=ca_file)
    headers = {"authorization": f"Bearer {token}"}
    assert client.is_server_live(headers=headers), "is_server_live"
    print("tls live ok")
    rows = np.array([ROW] * 2, dtype=np.float32)
    tensor = grpcclient.InferInput("features", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    result = client.infer(model, [tensor], headers=headers)
    labels = result.as_numpy("label")
    assert labels is not None and labels.shape == (2,), labels
    print("tls infer ok", labels.tolist())
    try:
        client.infer(model, [tensor])
    except InferenceServerException as e:
        assert e.status() == str(grpc.StatusCode.UNAUTHENTICATED), (e.status(), e.message())
        print("tls unauthenticated ok:", e.message())
    else:
        raise AssertionError("an inference without the token was answered")
    return 0


if __name__ == "__main__":
    sys.exit(main())
