"""Models in object storage: an `s3://` base path served and hot-reloaded from a real
S3-compatible server (moto's, started on 127.0.0.1 by these tests)."""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from fastapi.testclient import TestClient
from moto.core.authorization import disable_iam_authentication, enable_iam_authentication
from moto.server import ThreadedMotoServer

from sts.errors import ConfigError
from sts.model_config import ModelConfig
from sts.storage import RemoteStore, secret_values
from tests.conftest import ROOT, app_client, free_port, wait_for, wait_until_ready

IRIS = (ROOT / "examples" / "models" / "iris_logreg" / "1" / "model.onnx").read_bytes()
ROW = {"instances": [[5.1, 3.5, 1.4, 0.2]]}
SECRET = "s3cr3t-never-shown-0123456789"
POLL = 0.2


class S3:
    """A moto S3 server on a free port of 127.0.0.1, and a client that writes to it."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )

    def bucket(self) -> str:
        name = f"models-{uuid.uuid4().hex[:10]}"
        self.client.create_bucket(Bucket=name)
        return name

    def put(self, bucket: str, key: str, body: bytes = IRIS) -> None:
        self.client.put_object(Bucket=bucket, Key=key, Body=body)

    def delete(self, bucket: str, prefix: str) -> None:
        listed = self.client.list_objects_v2(Bucket=bucket, Prefix=prefix)
        for obj in listed.get("Contents", []):
            self.client.delete_object(Bucket=bucket, Key=obj["Key"])

    def options(self, **extra: Any) -> dict[str, Any]:
        return {"endpoint_url": self.endpoint, "key": "testing", "secret": SECRET, **extra}


@pytest.fixture(scope="module")
def s3() -> Iterator[S3]:
    store = S3()
    store.server.start()
    yield store
    store.server.stop()


def iris(url: str, options: dict[str, Any], **extra: Any) -> ModelConfig:
    # The latest version serves (the default is every version): a new one replaces the old.
    extra.setdefault("version_policy", "latest")
    return ModelConfig(
        name="iris", base_path=url, platform="onnx", storage_options=options, **extra
    )


@pytest.fixture
def served(tmp_path: Path) -> Any:
    def start(config: ModelConfig) -> Any:
        return app_client(
            [config], file_system_poll_wait_seconds=POLL, model_cache_dir=str(tmp_path / "cache")
        )

    return start


def serving(client: TestClient) -> set[int]:
    return set(client.app.state.repository.model("iris").serving)  # type: ignore[attr-defined]


def store_of(client: TestClient) -> RemoteStore:
    store = client.app.state.repository.model("iris").store  # type: ignore[attr-defined]
    assert store is not None
    return store


def listings(store: RemoteStore, count: int) -> None:
    """Wait until the store has listed `count` more times."""
    seen = [store.listed_at]
    for _ in range(count):
        wait_for(lambda: store.listed_at != seen[-1], what="the next listing")
        seen.append(store.listed_at)


def predicts(client: TestClient, version: int) -> bool:
    reply = client.post(f"/v1/models/iris/versions/{version}:predict", json=ROW)
    return reply.status_code == 200 and len(reply.json()["predictions"]) == 1


def test_serves_and_hot_reloads_from_s3(s3: S3, served: Any) -> None:
    bucket = s3.bucket()
    s3.put(bucket, "iris/1/model.onnx")
    s3.put(bucket, "iris/README", b"not a version")
    config = iris(f"s3://{bucket}/iris", s3.options(), version_policy="all")
    with served(config) as client:
        assert serving(client) == {1}
        assert predicts(client, 1)
        detail = client.get("/v1/models/iris").json()
        assert detail["model_base_path"] == f"s3://{bucket}/iris"
        assert detail["storage"]["versions"]["1"]["state"] == "CACHED"
        cache = Path(detail["storage"]["cache"])

        store = store_of(client)
        before = store.listings
        s3.put(bucket, "iris/2/model.onnx")  # a new version while serving
        wait_for(lambda: serving(client) == {1, 2}, timeout=30, what="version 2 served")
        # Seen by the next listing, confirmed by the one after (one listing may have been
        # under way during the upload).
        assert store.units["2"].listing - before <= 3
        assert predicts(client, 2)

        s3.delete(bucket, "iris/1/")  # a version removed from the store
        wait_for(lambda: serving(client) == {2}, timeout=30, what="version 1 unloaded")
        assert not (cache / "versions" / "1").exists()
        assert client.post("/v1/models/iris/versions/1:predict", json=ROW).status_code == 404
        assert predicts(client, 2)


def test_a_version_still_uploading_is_never_served(
    s3: S3, served: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = s3.bucket()
    s3.put(bucket, "iris/1/model.onnx")
    with served(iris(f"s3://{bucket}/iris", s3.options())) as client:
        store = store_of(client)
        repository = client.app.state.repository  # type: ignore[attr-defined]
        # An uploader that adds an object between every two listings (right after each,
        # so no listing can miss it): the version never looks complete.
        uploads = [("iris/2/model.onnx", b"half a model")]
        uploads += [(f"iris/2/assets/part{part}", b"x" * 100) for part in range(5)]
        parts = iter(uploads)
        seen: list[tuple[str | None, bool]] = []
        list_store = store._list

        def list_then_upload() -> Any:
            listing = list_store()
            upload = next(parts, None)
            if upload is not None:
                unit = store.units.get("2")
                seen.append((unit.state if unit else None, 2 in repository.model("iris").versions))
                s3.put(bucket, *upload)
            return listing

        monkeypatch.setattr(store, "_list", list_then_upload)
        wait_for(lambda: len(seen) == 6, timeout=30, what="six listings during the upload")
        assert serving(client) == {1}
        assert 2 not in repository.model("iris").versions
        assert [loaded for _, loaded in seen] == [False] * 6
        # The state a listing left: nothing before the first object was seen, then uploading.
        assert [state for state, _ in seen[2:]] == ["UPLOADING"] * 4
        s3.put(bucket, "iris/2/model.onnx")  # the last object: the real model
        wait_for(lambda: serving(client) == {2}, timeout=30, what="version 2 served")
        assert predicts(client, 2)
        assert (store.cache / "versions" / "2" / "assets" / "part4").stat().st_size == 100


def test_a_version_marker_says_when_a_version_is_complete(s3: S3, served: Any) -> None:
    bucket = s3.bucket()
    s3.put(bucket, "iris/1/model.onnx")
    s3.put(bucket, "iris/1/_SUCCESS", b"")
    config = iris(f"s3://{bucket}/iris", s3.options(), version_marker="_SUCCESS")
    with served(config) as client:
        assert serving(client) == {1}
        store = store_of(client)
        s3.put(bucket, "iris/2/model.onnx")
        listings(store, 3)  # listed unchanged, but the marker is missing
        assert serving(client) == {1}
        assert "version 2 uploading" in client.get("/v1/models/iris").json()["problem"]
        before = store.listings
        s3.put(bucket, "iris/2/_SUCCESS", b"")
        wait_for(lambda: serving(client) == {2}, timeout=30, what="version 2 served")
        assert store.units["2"].listing - before <= 2  # the next listing (or one under way)


def test_an_unreachable_store_keeps_serving_and_recovers(served: Any) -> None:
    s3 = S3()
    s3.server.start()
    bucket = s3.bucket()
    s3.put(bucket, "iris/1/model.onnx")
    try:
        with served(iris(f"s3://{bucket}/iris", s3.options())) as client:
            store = store_of(client)
            s3.server.stop()
            wait_for(lambda: "cannot list" in store.error, timeout=60, what="a listing error")
            assert serving(client) == {1}
            assert predicts(client, 1)
            detail = client.get("/v1/models/iris").json()
            assert "serving the versions already downloaded" in detail["problem"]

            s3.server = ThreadedMotoServer(ip_address="127.0.0.1", port=s3.port, verbose=False)
            s3.server.start()  # moto keeps its buckets in the process: the data is back
            s3.put(bucket, "iris/2/model.onnx")
            wait_for(lambda: serving(client) == {2}, timeout=60, what="recovered")
            assert store.error == ""
            assert "problem" not in client.get("/v1/models/iris").json()
    finally:
        s3.server.stop()


def test_wrong_credentials_are_a_clear_status_error_without_the_secret(
    s3: S3, served: Any, caplog: pytest.LogCaptureFixture
) -> None:
    bucket = s3.bucket()
    s3.put(bucket, "iris/1/model.onnx")
    options = s3.options(key="AKIAWRONGWRONGWRONG0")
    caplog.set_level(logging.DEBUG)
    with enable_iam_authentication(), served(iris(f"s3://{bucket}/iris", options)) as client:
        detail = client.get("/v1/models/iris").json()
        assert "access denied (check the credentials)" in detail["problem"]
        assert "Access Key Id you provided does not exist" in detail["problem"]
        assert detail["model_version_list"] == []
        reply = client.post("/v1/models/iris:predict", json=ROW)
        assert reply.status_code == 503
        everything = json.dumps(detail) + reply.text + client.get("/").text + caplog.text
        for page in ("/v1/models", "/v1/models/iris", "/v2/models/iris"):
            everything += client.get(page).text
    assert SECRET not in everything
    assert "cannot list" in caplog.text


def test_the_single_file_layout_works_with_a_url(s3: S3, served: Any) -> None:
    bucket = s3.bucket()
    s3.put(bucket, "models/iris.onnx")
    with served(iris(f"s3://{bucket}/models/iris.onnx", s3.options())) as client:
        assert serving(client) == {1}
        assert predicts(client, 1)


def test_partial_cache_entries_are_removed_on_restart(s3: S3, tmp_path: Path) -> None:
    bucket = s3.bucket()
    s3.put(bucket, "iris/1/model.onnx")
    store = RemoteStore.open("iris", f"s3://{bucket}/iris", s3.options(), "", tmp_path)
    assert store.sync() == store.cache / "versions"
    assert (store.cache / "versions" / "1" / "model.onnx").read_bytes() == IRIS
    # A crash mid-download, and one between moving a version in and recording it:
    (store.cache / "partial" / "2-dead").mkdir(parents=True)
    (store.cache / "partial" / "2-dead" / "model.onnx").write_bytes(IRIS[:10])
    (store.cache / "versions" / "3").mkdir()
    restarted = RemoteStore.open("iris", f"s3://{bucket}/iris", s3.options(), "", tmp_path)
    restarted.sync()
    assert not (store.cache / "partial" / "2-dead").exists()
    assert not (store.cache / "versions" / "3").exists()
    assert restarted.status()["versions"]["1"]["state"] == "CACHED"


def test_secrets_stay_out_of_urls_messages_and_reprs() -> None:
    with pytest.raises(ValueError, match="may not carry credentials"):
        ModelConfig(name="m", base_path="s3://user:pw@bucket/m", platform="onnx")
    with pytest.raises(ValueError, match="may not carry credentials"):
        ModelConfig(name="m", base_path="az://c/m?sig=abc", platform="onnx")
    with pytest.raises(ValueError, match="storage_options and version_marker need a URL"):
        ModelConfig(name="m", base_path="/models/m", storage_options={"anon": True})
    config = ModelConfig(
        name="m", base_path="s3://b/m", platform="onnx", storage_options={"secret": SECRET}
    )
    assert SECRET not in repr(config)
    options = {"key": "AKIA0000", "client_kwargs": {"aws_session_token": "tok-123"}, "anon": "x"}
    assert set(secret_values(options)) == {"AKIA0000", "tok-123"}


def test_a_protocol_without_its_library_names_the_extra(tmp_path: Path) -> None:
    config_file = tmp_path / "models.json"
    entry = {"name": "m", "base_path": "gs://bucket/m", "platform": "onnx"}
    config_file.write_text(json.dumps({"model_config_list": [entry]}))
    from sts.model_config import load_model_config_file

    if importlib.util.find_spec("gcsfs") is None:
        with pytest.raises(ConfigError, match=r"gs:// needs pip install 'sts\[gcs\]'"):
            load_model_config_file(config_file)


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("weed") is None,
    reason="seaweedfs (`weed`) is not installed: it is not on the package index here",
)
def test_end_to_end_against_seaweedfs(tmp_path: Path) -> None:
    """`weed mini` as a second S3 implementation, through the CLI in its own process."""
    port, s3_port = free_port(), free_port()
    weed = subprocess.Popen(
        [
            *("weed", "mini", f"-dir={tmp_path / 'data'}", f"-s3.port={s3_port}"),
            *(f"-master.port={port}", "-master.telemetry=false"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        endpoint = f"http://127.0.0.1:{s3_port}"
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="any",
            aws_secret_access_key="any",
            region_name="us-east-1",
        )

        def up() -> bool:
            try:
                client.create_bucket(Bucket="models")
                return True
            except Exception:
                return False

        wait_for(up, timeout=60, what="seaweedfs")
        client.put_object(Bucket="models", Key="iris/1/model.onnx", Body=IRIS)
        config = iris("s3://models/iris", {"endpoint_url": endpoint, "key": "any", "secret": "any"})
        with app_client(
            [config], file_system_poll_wait_seconds=POLL, model_cache_dir=str(tmp_path / "c")
        ) as served_client:
            assert predicts(served_client, 1)
            client.put_object(Bucket="models", Key="iris/2/model.onnx", Body=IRIS)
            wait_for(lambda: serving(served_client) == {2}, timeout=30, what="version 2")
    finally:
        weed.terminate()
        weed.wait(timeout=30)


def test_an_s3_model_serves_through_the_cli(s3: S3, tmp_path: Path) -> None:
    """The single-model flags with a URL, credentials and endpoint from the environment."""
    bucket = s3.bucket()
    s3.put(bucket, "iris/1/model.onnx")
    port = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "AWS_ENDPOINT_URL": s3.endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    from tests.conftest import BIN

    proc = subprocess.Popen(
        [
            *(str(BIN / "sts"), "--model_base_path", f"s3://{bucket}/iris", "--model_name", "iris"),
            *("--model_platform", "onnx", "--port", str(port), "--host", "127.0.0.1"),
            *("--model_cache_dir", str(tmp_path / "cache")),
            *("--grpc_port", "0"),  # the default 8001 may be taken on a shared machine
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"

    try:
        wait_until_ready(proc, url, timeout=60)
        reply = httpx.post(f"{url}/v1/models/iris:predict", json=ROW)
        assert reply.status_code == 200, reply.text
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0]
    assert f"s3://{bucket}/iris" in output
    assert SECRET not in output


def test_a_failed_download_is_retried_with_backoff_and_shown(s3: S3, served: Any) -> None:
    """A reader allowed to list but not to read: the version waits in RETRYING with the
    store's error, and loads on a later attempt once reading is allowed."""
    bucket = s3.bucket()
    s3.put(bucket, "iris/1/model.onnx")
    iam = boto3.client(
        "iam",
        endpoint_url=s3.endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    user = f"reader-{uuid.uuid4().hex[:6]}"
    iam.create_user(UserName=user)
    access = iam.create_access_key(UserName=user)["AccessKey"]

    def allow(*actions: str) -> None:
        statement = {"Effect": "Allow", "Action": list(actions), "Resource": "*"}
        document = json.dumps({"Version": "2012-10-17", "Statement": [statement]})
        iam.put_user_policy(UserName=user, PolicyName="models", PolicyDocument=document)

    allow("s3:ListBucket")
    options = {
        "endpoint_url": s3.endpoint,
        "key": access["AccessKeyId"],
        "secret": access["SecretAccessKey"],
    }
    with enable_iam_authentication(), served(iris(f"s3://{bucket}/iris", options)) as client:
        store = store_of(client)
        wait_for(lambda: store.units["1"].attempts >= 2, timeout=30, what="two failed tries")
        version = client.get("/v1/models/iris").json()["storage"]["versions"]["1"]
        assert version["state"] == "RETRYING"
        assert "access denied" in version["error"]
        assert version["retry_at"] is not None
        assert serving(client) == set()
        assert access["SecretAccessKey"] not in json.dumps(version)
        with disable_iam_authentication():
            allow("s3:ListBucket", "s3:GetObject")
        wait_for(lambda: serving(client) == {1}, timeout=60, what="loaded after a retry")
        assert predicts(client, 1)


def test_convert_refuses_a_url_instead_of_mangling_it(capsys: pytest.CaptureFixture[str]) -> None:
    from sts.cli import main

    argv = ["convert", "mxnet-to-onnx", "--model_base_path", "s3://b/m", "--output", "m.onnx"]
    assert main(argv) == 2
    assert "--model_base_path must be a local folder" in capsys.readouterr().err
