#!/usr/bin/env python3
"""Drives a gateway's gRPC endpoint with a standard Open Inference Protocol client from PyPI
(tritonclient's gRPC client, `inference.GRPCInferenceService`): health, readiness, metadata,
inference with raw tensor contents (what tritonclient sends) and with typed `contents` (a
ModelInferRequest built by hand and sent through the client's stub), a pinned version, the
request id in metadata both ways, and errors with their status codes.

Usage: oip_grpc_client_check.py HOST:PORT MODEL N_FEATURES
Prints one line per check and exits non-zero on the first failure. Used by the server's
integration tests (crates/server/tests/it/grpc.rs).
"""

import sys

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

ROW = [1.0, 50.0, 2.0, 40.0, 1.0, 2.0, 1.0, 1000.0]


def expect_error(call, code, says):
    try:
        call()
    except InferenceServerException as e:
        assert e.status() == str(code), (e.status(), e.message())
        assert says in e.message(), e.message()
        return e.message()
    raise AssertionError(f"expected {code}")


def main() -> int:
    url, model, n_features = sys.argv[1], sys.argv[2], int(sys.argv[3])
    client = grpcclient.InferenceServerClient(url=url)
    assert client.is_server_live(), "is_server_live"
    print("live ok")
    assert client.is_server_ready(), "is_server_ready"
    print("ready ok")
    assert client.is_model_ready(model), "is_model_ready"
    print("model ready ok")
    server = client.get_server_metadata()
    assert server.name == "switchyard", server
    print("server metadata ok")
    meta = client.get_model_metadata(model)
    assert meta.name == model, meta
    assert list(meta.inputs[0].shape) == [-1, n_features], meta
    version = meta.versions[-1]
    assert client.is_model_ready(model, version), "is_model_ready(version)"
    print("model metadata ok")

    rows = np.array([ROW[:n_features]] * 3, dtype=np.float32)
    tensor = grpcclient.InferInput(meta.inputs[0].name, list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    result = client.infer(model, [tensor])
    labels = result.as_numpy("label")
    probabilities = result.as_numpy("probabilities")
    assert labels is not None and labels.shape == (3,), labels
    assert probabilities is not None and probabilities.shape[0] == 3, probabilities
    print("raw infer ok", labels.tolist())

    # Typed contents, request id in metadata, through the client's own stub.
    request = service_pb2.ModelInferRequest(model_name=model, id="typed-1")
    typed = request.inputs.add(name=meta.inputs[0].name, datatype="FP32", shape=list(rows.shape))
    typed.contents.fp32_contents.extend(rows.reshape(-1).tolist())
    response, call = client._client_stub.ModelInfer.with_call(
        request, metadata=(("x-request-id", "grpc-typed-1"),)
    )
    metadata = dict(call.initial_metadata())
    assert metadata.get("x-request-id") == "grpc-typed-1", metadata
    assert response.id == "typed-1", response
    names = [o.name for o in response.outputs]
    got = np.frombuffer(response.raw_output_contents[names.index("label")], dtype=np.int64)
    assert got.tolist() == labels.tolist(), (got, labels)
    print("typed infer ok", metadata.get("x-switchyard-model-version"))

    pinned = client.infer(model, [tensor], model_version=version)
    assert pinned.get_response().model_version == version, pinned.get_response()
    print("pinned infer ok", version)

    print(
        "error ok:",
        expect_error(
            lambda: client.infer("no-such-model", [tensor]),
            grpc.StatusCode.NOT_FOUND,
            "no model named 'no-such-model'",
        ),
    )
    expect_error(
        lambda: client.infer(model, [tensor], model_version="v9"),
        grpc.StatusCode.NOT_FOUND,
        "has no version 'v9'",
    )
    short = grpcclient.InferInput("features", list(rows.shape), "FP32")
    short.set_data_from_numpy(rows)
    short.set_shape([3, n_features + 1])
    expect_error(
        lambda: client.infer(model, [short]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "'features'",
    )
    odd = service_pb2.ModelInferRequest(model_name=model)
    bad = odd.inputs.add(name="features", datatype="FP128", shape=[1])
    bad.contents.fp32_contents.append(1.0)
    try:
        client._client_stub.ModelInfer(odd)
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
        assert "unknown datatype 'FP128'" in e.details(), e.details()
    else:
        raise AssertionError("an unknown datatype must fail")
    print("bad inputs ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
