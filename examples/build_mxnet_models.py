"""Train the digits classifier in MXNet and write it under examples/models/, twice:

- `digits_mxnet/1/`: symbol + params + signature.json, served by the MXNet environment;
- `digits_mxnet_onnx/1/model.onnx`: the same model through `sts convert mxnet-to-onnx`,
  served by every environment under the same name and request.

No package ships MXNet weights, so this trains them (a few seconds on a CPU). It runs in
the MXNet environment:

    .venv-mx/bin/python examples/build_mxnet_models.py   # `make examples` runs it
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import mxnet as mx
import numpy as np
from sklearn.datasets import load_digits

HERE = Path(__file__).resolve().parent
MODELS = HERE / "models"
sys.path.insert(0, str(HERE.parent))

from sts.convert import mxnet_to_onnx  # noqa: E402 - after the path above


def _nd(array: np.ndarray) -> mx.nd.NDArray:
    return mx.nd.from_numpy(np.ascontiguousarray(array), zero_copy=False)


def train(hidden: int = 16, seed: int = 1, epochs: int = 300) -> tuple[mx.gluon.Block, float]:
    """An MLP on 8x8 grey digits scaled to 0..1 (NHWC), trained full-batch with Adam on
    the first 1500 digits; returns it and its accuracy on the other 297."""
    mx.random.seed(seed)
    digits = load_digits()
    x = (digits.images / 16.0).reshape(-1, 8, 8, 1).astype(np.float32)
    y = digits.target.astype(np.float32)
    split = 1500
    net = mx.gluon.nn.HybridSequential()
    net.add(mx.gluon.nn.Flatten(), mx.gluon.nn.Dense(hidden, activation="relu"))
    net.add(mx.gluon.nn.Dense(10))
    net.initialize(mx.init.Xavier())
    net.hybridize()
    trainer = mx.gluon.Trainer(net.collect_params(), "adam", {"learning_rate": 0.02})
    loss = mx.gluon.loss.SoftmaxCrossEntropyLoss()
    images, labels = _nd(x[:split]), _nd(y[:split])
    for _ in range(epochs):
        with mx.autograd.record():
            value = loss(net(images), labels)
        value.backward()
        trainer.step(split)
    predicted = net(_nd(x[split:])).argmax(axis=1).asnumpy()
    return net, float(np.mean(predicted == y[split:]))


def save(net: mx.gluon.Block, folder: Path) -> None:
    """The trained layers plus a serving head: `probabilities` and int64 `classes`."""
    logits = net(mx.sym.var("images"))
    probabilities = mx.sym.softmax(logits, axis=1, name="probabilities")
    classes = mx.sym.cast(mx.sym.argmax(logits, axis=1), dtype="int64", name="classes")
    symbol = mx.sym.Group([probabilities, classes])
    params = {f"arg:{p.name}": p.data() for p in net.collect_params().values()}
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    symbol.save(str(folder / "digits-symbol.json"))
    mx.nd.save(str(folder / "digits-0000.params"), params)
    signature = {
        "inputs": {"images": {"dtype": "float32", "shape": [-1, 8, 8, 1]}},
        "outputs": ["probabilities", "classes"],
    }
    (folder / "signature.json").write_text(json.dumps(signature, indent=2) + "\n")
    for file in sorted(folder.iterdir()):
        print(f"wrote {file.relative_to(HERE.parent)} ({file.stat().st_size} bytes)")


def main() -> None:
    net, accuracy = train()
    print(f"digits MXNet held-out accuracy: {accuracy:.3f}")
    save(net, MODELS / "digits_mxnet" / "1")
    onnx_file = MODELS / "digits_mxnet_onnx" / "1" / "model.onnx"
    done = mxnet_to_onnx(MODELS / "digits_mxnet", onnx_file)
    print(
        f"wrote {onnx_file.relative_to(HERE.parent)} ({onnx_file.stat().st_size} bytes; "
        f"max abs difference to MXNet {done.max_abs_diff:.1e})"
    )


if __name__ == "__main__":
    main()
