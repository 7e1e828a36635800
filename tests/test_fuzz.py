"""A schemathesis run over the whole OpenAPI schema against a live server with real
models: whatever it generates (paths, queries, bodies), no answer is a 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from sts.model_config import ModelConfig
from tests import fakes, onnx_models
from tests.conftest import LiveServer, fake_config
from tests.conftest import settings as server_settings

EXAMPLES_PER_OPERATION = 25


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("fuzz")
    fakes.write_version(root / "default", 1)
    onnx_models.identities(root / "identities" / "1" / "model.onnx")
    onnx_models.identity(root / "image" / "1" / "model.onnx", ["n", 4, 4, 3])
    configs = [
        fake_config("default", root / "default", version_labels={"stable": 1}),
        ModelConfig(name="identities", base_path=str(root / "identities"), platform="onnx"),
        ModelConfig(name="image", base_path=str(root / "image"), platform="onnx"),
    ]
    # The repository extension on: unloading and loading are fuzzed too.
    with LiveServer(server_settings(enable_model_control=True), configs) as live:
        yield live


def test_no_5xx_anywhere(server: LiveServer) -> None:
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    failures: list[str] = []
    calls: list[int] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 20  # every protocol

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case: Any) -> None:
            response = case.call(timeout=30)
            calls.append(response.status_code)
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path} -> {response.status_code}: "
                    f"{response.text[:200]}"
                )

        fuzz()
    assert not failures, "\n".join(failures[:20])
    assert len(calls) > 10 * len(operations)
    assert 200 in calls  # not only refusals: valid requests get through too
