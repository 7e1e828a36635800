"""The JVM platforms on a real JVM: H2O MOJOs (against what H2O's own cluster predicted
when it exported them, stored beside each in examples/models/) and PMML (against
scikit-learn's own predictions), over every protocol; and `spark`, refused with its routes.

JPype starts one JVM per process and cannot restart it, so every test here shares the one
the first load starts; the missing-Java test runs in a subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from sts.model_config import ModelConfig
from tests.conftest import BIN, FIRST_LOAD_SECONDS, ROOT, app_client, free_port, wait_for

pytestmark = pytest.mark.skipif(
    shutil.which("java") is None and not os.environ.get("JAVA_HOME"),
    reason="no Java runtime (`make tools` installs default-jre-headless)",
)

EXAMPLES = ROOT / "examples" / "models"
CANCER_COLUMNS = ["mean_radius", "mean_texture", "mean_smoothness", "mean_concavity"]


def expected(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((EXAMPLES / name / "expected.json").read_text())
    return document


@pytest.fixture(scope="module")
def cancer_pmml(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, Any]:
    """A scaler + logistic regression on four breast-cancer measurements, as PMML, with
    the fitted pipeline and held-out rows."""
    import pandas as pd
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from sklearn2pmml.pipeline import PMMLPipeline

    from tests.jvm_models import to_pmml

    data = load_breast_cancer()
    frame = pd.DataFrame(data.data, columns=[c.replace(" ", "_") for c in data.feature_names])
    x = frame[CANCER_COLUMNS]
    y = pd.Series(data.target, name="malignant")
    pipeline = PMMLPipeline([("scaler", StandardScaler()), ("model", LogisticRegression())])
    pipeline.fit(x.iloc[50:], y.iloc[50:])
    base = tmp_path_factory.mktemp("pmml") / "cancer_pmml"
    to_pmml(pipeline, base / "1" / "model.pmml")
    return base, pipeline, x.iloc[:50]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("jvm")
    for name in ("cancer_h2o", "iris_pmml"):
        shutil.copytree(EXAMPLES / name, root / name)
    (root / "broken_h2o" / "1").mkdir(parents=True)
    (root / "broken_h2o" / "1" / "model.zip").write_bytes(b"PK\x03\x04 not a zip at all")
    (root / "broken_pmml" / "1").mkdir(parents=True)
    (root / "broken_pmml" / "1" / "model.pmml").write_text("<PMML><DataDictionary>")
    # An external entity would read a local file into the model: refused with the DOCTYPE.
    document = (EXAMPLES / "iris_pmml" / "1" / "model.pmml").read_text()
    document = document.replace(
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>',
        '<?xml version="1.0"?><!DOCTYPE PMML [<!ENTITY x SYSTEM "file:///etc/passwd">]>',
    ).replace('name="SkLearn2PMML package"', 'name="&x;"')
    (root / "entity_pmml" / "1").mkdir(parents=True)
    (root / "entity_pmml" / "1" / "model.pmml").write_text(document)
    (root / "spark_model" / "metadata").mkdir(parents=True)
    (root / "spark_model" / "metadata" / "part-00000").write_text("{}")
    return root


def config(name: str, base: Path, platform: str, **extra: Any) -> ModelConfig:
    return ModelConfig(name=name, base_path=str(base), platform=platform, **extra)


@pytest.fixture(scope="module")
def client(root: Path, cancer_pmml: tuple[Path, Any, Any]) -> Iterator[TestClient]:
    configs = [
        config("cancer_h2o", root / "cancer_h2o", "h2o"),
        config(
            "strict_h2o", root / "cancer_h2o", "h2o", options={"unknown_levels_as_missing": False}
        ),
        config("diabetes_h2o", EXAMPLES / "diabetes_h2o", "h2o"),
        config("iris_pmml", root / "iris_pmml", "pmml"),
        config("cancer_pmml", cancer_pmml[0], "pmml", batching={"max_batch_size": 8}),
        config("broken_h2o", root / "broken_h2o", "h2o"),
        config("broken_pmml", root / "broken_pmml", "pmml"),
        config("entity_pmml", root / "entity_pmml", "pmml"),
        config("spark_model", root / "spark_model", "spark"),
    ]
    with app_client(configs) as c:
        yield c


def sts_predict(client: TestClient, model: str, data: Any) -> Any:
    return client.post("/", json={"model_name": model, "data": data})


def v2_inputs(columns: dict[str, list[Any]]) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "datatype": "BYTES" if isinstance(values[0], str) else "FP64",
            "shape": [len(values)],
            "data": values,
        }
        for name, values in columns.items()
    ]


def outputs_by_protocol(client: TestClient, model: str, columns: dict[str, list[Any]]) -> list[Any]:
    """The same rows through the original API, TF Serving (columns and rows) and KServe v2,
    each answer as {output name: list}."""
    answers = []
    r = sts_predict(client, model, columns)
    assert r.status_code == 200, r.text
    answers.append(r.json())
    r = client.post(f"/v1/models/{model}:predict", json={"inputs": columns})
    assert r.status_code == 200, r.text
    answers.append(r.json()["outputs"])
    rows = [
        dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)
    ]
    r = client.post(f"/v1/models/{model}:predict", json={"instances": rows})
    assert r.status_code == 200, r.text
    predictions = r.json()["predictions"]
    if isinstance(predictions[0], dict):
        answers.append({k: [p[k] for p in predictions] for k in predictions[0]})
    else:  # TF Serving's rows of a single-output model are bare values
        answers.append({"predictions": predictions})
    r = client.post(f"/v2/models/{model}/infer", json={"inputs": v2_inputs(columns)})
    assert r.status_code == 200, r.text
    v2: dict[str, Any] = {}
    for out in r.json()["outputs"]:
        v2[out["name"]] = np.array(out["data"], dtype=object).reshape(out["shape"]).tolist()
    answers.append(v2)
    # A single output comes back bare (the original's and TF Serving's convention).
    return [a if isinstance(a, dict) else {"predictions": a} for a in answers]


def test_h2o_classifier_matches_the_h2o_cluster_over_every_protocol(client: TestClient) -> None:
    want = expected("cancer_h2o")
    for answer in outputs_by_protocol(client, "cancer_h2o", want["inputs"]):
        assert answer["predictions"] == want["predict"]
        assert np.allclose(
            np.array(answer["probabilities"], float), want["probabilities"], atol=1e-12
        )
        assert answer["classes"] == [want["classes"]] * len(want["predict"])


def test_h2o_regression_matches_the_h2o_cluster(client: TestClient) -> None:
    want = expected("diabetes_h2o")
    for answer in outputs_by_protocol(client, "diabetes_h2o", want["inputs"]):
        assert np.allclose(answer["predictions"], want["predict"], rtol=1e-12)


def test_pmml_matches_scikit_learn_over_every_protocol(
    client: TestClient, cancer_pmml: tuple[Path, Any, Any]
) -> None:
    _, pipeline, rows = cancer_pmml
    columns = {c: rows[c].tolist() for c in rows.columns}
    probabilities = pipeline.predict_proba(rows)
    for answer in outputs_by_protocol(client, "cancer_pmml", columns):
        assert answer["malignant"] == pipeline.predict(rows).tolist()
        assert np.allclose(answer["probability(1)"], probabilities[:, 1], rtol=0, atol=1e-9)
    want = expected("iris_pmml")  # the example: string classes
    for answer in outputs_by_protocol(client, "iris_pmml", want["inputs"]):
        assert answer["species"] == want["species"]
        for i, name in enumerate(want["classes"]):
            got = answer[f"probability({name})"]
            assert np.allclose(got, [p[i] for p in want["probabilities"]], rtol=0, atol=1e-9)


def test_signatures_in_every_protocols_metadata(client: TestClient) -> None:
    sts = client.get("/v1/models/cancer_h2o").json()["model_signature"]
    assert [(i["name"], i["dtype_name"], i["shape"]) for i in sts["inputs"]] == [
        *[(c, "float64", [-1]) for c in [*CANCER_COLUMNS, "worst_area"]],
        ("size_band", "string", [-1]),
    ]
    assert [(o["name"], o["shape"]) for o in sts["outputs"]] == [
        ("predictions", [-1]),
        ("probabilities", [-1, 2]),
        ("classes", [-1, 2]),
    ]
    tfs = client.get("/v1/models/iris_pmml/metadata").json()
    inputs = tfs["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]
    assert inputs["sepal_length"]["dtype"] == "DT_DOUBLE"
    v2 = client.get("/v2/models/iris_pmml").json()
    assert [o["name"] for o in v2["outputs"]] == [
        "species",
        "probability(setosa)",
        "probability(versicolor)",
        "probability(virginica)",
    ]
    assert v2["outputs"][0]["datatype"] == "BYTES"


def test_gen_json_and_a_generated_client_request(client: TestClient) -> None:
    example = client.get("/v1/models/cancer_h2o/gen_json").json()
    assert set(example["data"]) == {*CANCER_COLUMNS, "worst_area", "size_band"}
    r = sts_predict(client, "cancer_h2o", example["data"])  # "" is an unseen level: missing
    assert r.status_code == 200, r.text
    request = json.loads(
        client.get(
            "/v1/models/iris_pmml/gen_client", params={"language": "json", "protocol": "v2"}
        ).text
    )
    body = request.get("body", request)
    assert client.post("/v2/models/iris_pmml/infer", json=body).status_code == 200


@pytest.mark.parametrize(
    ("model", "change", "message"),
    [
        ("cancer_h2o", {"mean_radius": ["big"] * 8}, "mean_radius"),
        ("cancer_h2o", {"size_band": None}, "size_band"),
        ("iris_pmml", {"sepal_length": [[1.0, 2.0]] * 3}, "sepal_length"),
        ("iris_pmml", {"petal_width": None}, "petal_width"),
        ("strict_h2o", {"size_band": ["huge"] * 8}, "huge"),
        ("iris_pmml", {"sepal_length": [float("nan")] * 3}, "no value for 'species'"),
    ],
)
def test_bad_input_is_a_400(
    client: TestClient, model: str, change: dict[str, Any], message: str
) -> None:
    base = "cancer_h2o" if model.endswith("h2o") else model
    data = dict(expected(base)["inputs"])
    for name, value in change.items():
        if value is None:
            del data[name]
        else:
            data[name] = value
    r = client.post(
        "/",
        content=json.dumps({"model_name": model, "data": data}),  # NaN: a missing value
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]


def test_unseen_level_counts_as_missing_by_default(client: TestClient) -> None:
    data = dict(expected("cancer_h2o")["inputs"])
    data["size_band"] = ["huge"] * 8
    assert sts_predict(client, "cancer_h2o", data).status_code == 200


def test_broken_files_and_spark_fail_their_load_with_the_reason(client: TestClient) -> None:
    def error(model: str) -> str:
        versions = client.get(f"/v1/models/{model}").json()["versions"]
        assert versions[0]["state"] == "END"
        return str(versions[0]["error"])

    assert "H2O cannot load model.zip" in error("broken_h2o")
    assert "JPMML cannot load model.pmml" in error("broken_pmml")
    assert "DOCTYPE is disallowed" in error("entity_pmml")
    spark = error("spark_model")
    assert "platform 'pmml'" in spark
    assert "convert_sparkml" in spark
    assert sts_predict(client, "broken_pmml", {}).status_code == 503
    assert client.get("/v1/models/iris_pmml").json()["versions"][0]["state"] == "AVAILABLE"


def test_metrics_and_dashboard_know_the_jvm_models(client: TestClient) -> None:
    want = expected("iris_pmml")
    assert sts_predict(client, "iris_pmml", want["inputs"]).status_code == 200
    metrics = client.get("/metrics").text
    assert 'model="iris_pmml"' in metrics
    page = client.get("/dashboard/models/cancer_h2o")
    assert page.status_code == 200
    assert "size_band" in page.text


def test_concurrent_predictions_from_many_threads(client: TestClient) -> None:
    want = expected("cancer_h2o")
    iris = expected("iris_pmml")
    failures: list[str] = []

    def hammer() -> None:
        for _ in range(10):
            h2o = sts_predict(client, "cancer_h2o", want["inputs"]).json()
            pmml = sts_predict(client, "iris_pmml", iris["inputs"]).json()
            if h2o.get("predictions") != want["predict"] or pmml.get("species") != iris["species"]:
                failures.append(f"{h2o} {pmml}")

    threads = [threading.Thread(target=hammer) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures


def test_new_version_and_warm_up(client: TestClient, root: Path, tmp_path: Path) -> None:
    base = tmp_path / "iris"
    shutil.copytree(EXAMPLES / "iris_pmml", base)
    with app_client([config("iris", base, "pmml")], file_system_poll_wait_seconds=0.2) as c:
        assert c.get("/v1/models/iris").json()["model_version_list"] == ["1"]
        version = base / "2"
        shutil.copytree(base / "1", tmp_path / "staging")
        want = expected("iris_pmml")
        (tmp_path / "staging" / "warmup.json").write_text(
            json.dumps({"requests": [{"data": want["inputs"]}]})
        )
        (tmp_path / "staging").rename(version)
        wait_for(
            lambda: (
                c.get("/v1/models/iris").json()["model_version_list"] == ["1", "2"]
                or c.get("/v1/models/iris").json()["model_version_list"] == ["2"]
            ),
            timeout=60,
            what="version 2",
        )
        r = c.post("/", json={"model_name": "iris", "model_version": 2, "data": want["inputs"]})
        assert r.json()["species"] == want["species"]


def test_without_java_the_jvm_platforms_fail_and_the_others_serve(tmp_path: Path) -> None:
    script = f"""
import json
from sts.model_config import ModelConfig
from tests.conftest import app_client
configs = [
    ModelConfig(name="iris_pmml", base_path={str(EXAMPLES / "iris_pmml")!r}, platform="pmml"),
    ModelConfig(name="cancer_h2o", base_path={str(EXAMPLES / "cancer_h2o")!r}, platform="h2o"),
    ModelConfig(name="iris", base_path={str(EXAMPLES / "iris_logreg")!r}, platform="onnx"),
]
with app_client(configs) as client:
    errors = [client.get("/v1/models/" + m).json()["versions"][0]["error"]
              for m in ("iris_pmml", "cancer_h2o")]
    data = {{"features": [[5.1, 3.5, 1.4, 0.2]]}}
    status = client.post("/", json={{"model_name": "iris", "data": data}}).status_code
print(json.dumps({{"errors": errors, "onnx": status}}))
"""
    bin_dir = tmp_path / "bin"  # a PATH with python and without java
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    envs = [
        {"JAVA_HOME": str(tmp_path / "nowhere"), "PATH": str(bin_dir)},
        {"PATH": str(bin_dir)},
    ]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={k: v for k, v in os.environ.items() if k not in ("JAVA_HOME", "PATH")} | env,
        )
        for env in envs
    ]  # both at once: each pays for its own imports
    for env, proc in zip(envs, procs, strict=True):
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        result = json.loads(out.strip().splitlines()[-1])
        assert result["onnx"] == 200
        for message in result["errors"]:
            assert "default-jre-headless" in message, message
            assert ("JAVA_HOME=" in message) == ("JAVA_HOME" in env)


def test_the_examples_config_serves_the_jvm_examples() -> None:
    from sts.model_config import load_model_config_file

    configs = [
        c
        for c in load_model_config_file(ROOT / "examples" / "models.json")
        if c.platform in ("h2o", "pmml")
    ]
    assert {c.name for c in configs} == {"cancer_h2o", "diabetes_h2o", "iris_pmml"}
    with app_client(configs) as client:
        for model in ("cancer_h2o", "diabetes_h2o", "iris_pmml"):
            body = json.loads((ROOT / "examples" / "requests" / f"{model}.json").read_text())
            r = client.post("/", json=body)
            assert r.status_code == 200, r.text
            want = expected(model)
            got = r.json()
            if model == "iris_pmml":
                assert got["species"] == want["species"][:2]
            elif model == "cancer_h2o":
                assert got["predictions"] == want["predict"][:2]
            else:
                assert np.allclose(got["predictions"], want["predict"][:2], rtol=1e-12)


@pytest.mark.slow
def test_the_server_stops_gracefully_with_a_jvm_inside() -> None:
    """The JVM leaves SIGINT and SIGTERM to Python (-Xrs): `docker stop` (and Ctrl-C)
    drain and exit as with any other platform, and the JVM ends with the process."""
    stop = signal.SIGTERM
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STFS_")}
    command = [str(BIN / "sts"), "--model_base_path", str(EXAMPLES / "iris_pmml")]
    command += ["--model_platform", "pmml", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--grpc_port", "0"]  # gRPC's default port may be taken on a shared machine
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert process.poll() is None, process.communicate()[0]
        try:
            return httpx.get(f"{url}/health/ready").status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(ready, timeout=FIRST_LOAD_SECONDS, what="server ready")
        body = {"data": expected("iris_pmml")["inputs"]}
        assert httpx.post(url, json=body).json()["species"] == expected("iris_pmml")["species"]
        process.send_signal(stop)
        assert process.wait(timeout=30) in (0, -stop)
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


def test_which_file_of_a_version_folder_loads(tmp_path: Path) -> None:
    from sts.backends.h2o import H2oBackend, H2oOptions
    from sts.errors import ModelLoadError

    folder = tmp_path / "1"
    folder.mkdir()
    backend = H2oBackend(folder, H2oOptions())
    with pytest.raises(ModelLoadError, match=r"no model\.zip in"):
        backend.model_file()
    shutil.copy(EXAMPLES / "cancer_h2o" / "1" / "model.zip", folder / "gbm.zip")
    assert backend.model_file() == folder / "gbm.zip"
    shutil.copy(folder / "gbm.zip", folder / "glm.zip")
    with pytest.raises(ModelLoadError, match=r"several \.zip files .*gbm\.zip, glm\.zip"):
        backend.model_file()
    shutil.copy(folder / "gbm.zip", folder / "model.zip")
    assert backend.model_file() == folder / "model.zip"
    assert H2oBackend(folder / "glm.zip", H2oOptions()).model_file() == folder / "glm.zip"
