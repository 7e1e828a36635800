"""sts's protobuf schemas: current with the packages they come from, loadable without
TensorFlow, beside TensorFlow's own copies, and `TensorProto` read in every form
TensorFlow writes it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from sts.errors import InvalidInput
from sts.protos import DESCRIPTORS, TF, TFS, V2, generate
from sts.protos.tensors import from_array, to_array


def test_descriptors_are_current() -> None:
    """`make protos` rewrites the file; this fails when the installed packages changed."""
    assert DESCRIPTORS.read_bytes() == generate.serialized(), "run `make protos`"


def test_batching_parameters_match_tf_servings_file() -> None:
    """The one hand-declared message reads TF Serving's own batching file (the example in
    its `batching/README.md`) and has the numbers its `.proto` gives on the wire."""
    from google.protobuf import text_format

    message = TFS.BatchingParameters()
    text_format.Parse(
        "max_batch_size { value: 128 }\nbatch_timeout_micros { value: 0 }\n"
        "max_enqueued_batches { value: 1000000 }\nnum_batch_threads { value: 8 }\n",
        message,
    )
    assert message.max_batch_size.value == 128
    message.allowed_batch_sizes.append(128)
    # Field 1 (max_batch_size) a length-delimited wrapper, field 6 a packed int64 list.
    wire = message.SerializeToString()
    assert wire.startswith(b"\x0a\x03\x08\x80\x01")
    assert b"\x32\x02\x80\x01" in wire


def test_messages_load_without_tensorflow() -> None:
    code = (
        "import sys; from sts.protos import TFS, V2; "
        "r = TFS.PredictRequest(); r.inputs['x'].float_val.append(1.0); "
        "V2.ModelInferRequest(model_name='m'); "
        "print('tensorflow' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_messages_live_beside_tensorflows_own() -> None:
    from tensorflow_serving.apis import predict_pb2

    theirs = predict_pb2.PredictRequest()
    theirs.model_spec.name = "m"
    theirs.inputs["x"].CopyFrom(tf.make_tensor_proto([1.0, 2.0]))
    ours = TFS.PredictRequest.FromString(theirs.SerializeToString())
    assert ours.model_spec.name == "m"
    assert ours.__class__ is not predict_pb2.PredictRequest  # a private pool: no clash


DTYPES = ["float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8",
          "uint16", "uint32", "uint64", "bool"]  # fmt: skip


@pytest.mark.parametrize("dtype", DTYPES)
def test_tensor_round_trips_with_tensorflow(dtype: str) -> None:
    array = (np.arange(6).reshape(2, 3) % 2 == 0) if dtype == "bool" else np.arange(6, dtype=dtype)
    array = array.reshape(2, 3)
    theirs = tf.make_tensor_proto(array)  # tensor_content for numpy arrays
    got = to_array(TF.TensorProto.FromString(theirs.SerializeToString()), "x")
    assert got.dtype == array.dtype
    assert np.array_equal(got, array)
    typed = tf.make_tensor_proto(array.tolist(), dtype=tf.as_dtype(dtype))  # typed *_val
    assert np.array_equal(
        to_array(TF.TensorProto.FromString(typed.SerializeToString()), "x"), array
    )
    back = tf.make_ndarray(type(theirs).FromString(from_array(array).SerializeToString()))
    assert back.dtype == array.dtype
    assert np.array_equal(back, array)


def test_strings_fill_and_bfloat16() -> None:
    strings = np.array([[b"a", "\u00e9".encode()]], dtype=object)
    proto = TF.TensorProto.FromString(tf.make_tensor_proto(strings).SerializeToString())
    assert to_array(proto, "x").tolist() == strings.tolist()
    filled = tf.make_tensor_proto(1.5, dtype=tf.float32, shape=[2, 2])  # one value, four elements
    assert to_array(TF.TensorProto.FromString(filled.SerializeToString()), "x").tolist() == [
        [1.5, 1.5],
        [1.5, 1.5],
    ]
    half = TF.TensorProto(dtype=14)  # DT_BFLOAT16, bits in half_val
    half.tensor_shape.dim.add().size = 2
    half.half_val.extend([0x3FC0, 0x4010])  # 1.5, 2.25
    assert to_array(half, "x").tolist() == [1.5, 2.25]


def test_bad_tensors_are_refused() -> None:
    proto = TF.TensorProto(dtype=1, tensor_content=b"\0" * 12)
    proto.tensor_shape.dim.add().size = 2
    with pytest.raises(InvalidInput, match="tensor_content has 12 bytes but shape \\[2\\]"):
        to_array(proto, "x")
    proto = TF.TensorProto(dtype=8)  # DT_COMPLEX64
    with pytest.raises(InvalidInput, match="DT_COMPLEX64 tensors are not supported"):
        to_array(proto, "x")
    proto = TF.TensorProto(dtype=1)
    proto.tensor_shape.unknown_rank = True
    with pytest.raises(InvalidInput, match="unknown rank"):
        to_array(proto, "x")
    proto = TF.TensorProto(dtype=1, float_val=[1.0, 2.0, 3.0])
    proto.tensor_shape.dim.add().size = 2
    with pytest.raises(InvalidInput, match="3 values do not fit shape \\[2\\]"):
        to_array(proto, "x")


def test_v2_schema_has_the_repository_extension() -> None:
    assert V2.RepositoryIndexRequest(ready=True).ready
