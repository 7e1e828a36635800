"""MLServer as `make bench`'s peer: a custom runtime calling ONNX Runtime on one thread.

Runs inside `.venv-mlserver` (MLServer pins its own FastAPI, protobuf and gRPC, which
sts's environment cannot share). As small as MLServer's custom-runtime guide shows
(`MLModel.load` / `MLModel.predict`, `NumpyCodec` for the tensors); `parameters.uri` in
`model-settings.json` names the `.onnx` file. Inputs are decoded to numpy arrays of the
request's datatype and shape; every output is answered, as FP32/INT64 tensors.
"""

from __future__ import annotations

import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxModel(MLModel):
    """One ONNX Runtime session, one intra-op and one inter-op thread (as sts's models get
    in the bench), called on MLServer's event loop or in its worker process."""

    async def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        uri = self.settings.parameters.uri if self.settings.parameters else None
        if not uri:
            raise ValueError("model-settings.json: parameters.uri must name the .onnx file")
        self._session = ort.InferenceSession(uri, options, providers=["CPUExecutionProvider"])
        self._outputs = [o.name for o in self._session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = {i.name: NumpyCodec.decode_input(i) for i in payload.inputs}
        results = self._session.run(None, feeds)
        return InferenceResponse(
            model_name=self.name,
            outputs=[
                NumpyCodec.encode_output(name, value)
                for name, value in zip(self._outputs, results, strict=True)
            ],
        )
