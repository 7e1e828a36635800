"""Nothing phones home: the server, serving and predicting with every installed backend,
makes no connection beyond loopback.

The server runs in a network namespace of its own that has only a loopback interface (so
nothing could leave even if something tried) and under strace, which records every
`connect`/`sendto`/`sendmsg`; any address that is not loopback fails the test.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sts.telemetry import SWITCHES, disable_library_telemetry
from tests.conftest import BIN, ROOT

# ONNX Runtime's lookup came about 20 s after a model first ran: watch for longer.
WATCH_SECONDS = 30
ADDRESS = re.compile(r'inet_addr\("([^"]+)"\)|inet_pton\(AF_INET6, "([^"]+)"')

DRIVER = textwrap.dedent(
    """
    import os, signal, subprocess, sys, time
    import httpx

    trace, port, watch = sys.argv[1], sys.argv[2], float(sys.argv[3])
    server = subprocess.Popen(
        ["strace", "-f", "-qq", "-e", "trace=connect,sendto,sendmsg", "-o", trace,
         sys.argv[4], "--model_config_file", sys.argv[5], "--host", "127.0.0.1",
         "--port", port],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while True:
        try:
            if httpx.get(url + "/health/ready").status_code == 200:
                break
        except httpx.TransportError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            sys.exit("the server did not become ready")
        time.sleep(0.2)
    for model in httpx.get(url + "/v1/models").json():
        name = model["model_name"]
        body = httpx.get(f"{url}/v1/models/{name}/gen_json").json()
        answer = httpx.post(url, json={"model_name": name, **body}, timeout=60)
        print(name, answer.status_code, flush=True)
    end = time.monotonic() + watch  # a window to watch, not a wait for a condition
    while time.monotonic() < end and server.poll() is None:
        time.sleep(0.5)
    # Stop the server (strace's child) as Ctrl-C would; strace ends with it.
    with open(f"/proc/{server.pid}/task/{server.pid}/children") as children:
        for pid in children.read().split():
            os.kill(int(pid), signal.SIGINT)
    try:
        server.wait(300)
    except subprocess.TimeoutExpired:
        sys.exit("the server did not stop within 300 s of SIGINT")
    """
)


def outside_addresses(trace: str) -> list[str]:
    """Lines of an strace log that address anything but loopback (IPv4, IPv6, mapped)."""
    found = []
    for line in trace.splitlines():
        for v4, v6 in ADDRESS.findall(line):
            address = v4 or v6
            if not (address.startswith("127.") or address in ("::1", "::ffff:127.0.0.1")):
                found.append(line.strip())
    return found


def test_outside_addresses_are_found() -> None:
    # The parser the real test relies on, on lines strace printed here for ONNX Runtime's
    # telemetry lookup before it was switched off.
    lookup = (
        "19415 connect(8, {sa_family=AF_INET, sin_port=htons(53), "
        'sin_addr=inet_addr("10.255.255.53")}, 16) = 0'
    )
    local = (
        "7 connect(5, {sa_family=AF_INET, sin_port=htons(8500), "
        'sin_addr=inet_addr("127.0.0.1")}, 16) = 0'
    )
    v6 = (
        "9 connect(3, {sa_family=AF_INET6, sin6_port=htons(443), sin6_flowinfo=htonl(0), "
        'inet_pton(AF_INET6, "2603:1030::1", &sin6_addr), sin6_scope_id=0}, 28) = -1'
    )
    assert outside_addresses("\n".join([lookup, local, v6])) == [lookup, v6]


def test_the_switches_are_set() -> None:
    disable_library_telemetry()
    assert {k: os.environ[k] for k in SWITCHES} == SWITCHES
    assert SWITCHES["ORT_DISABLE_TELEMETRY"] == "1"


@pytest.mark.slow
def test_serving_every_backend_reaches_nothing_but_loopback(tmp_path: Path) -> None:
    tools = [shutil.which(t) for t in ("unshare", "strace", "ip")]
    if os.geteuid() != 0 or None in tools:
        pytest.skip("needs root, unshare, strace and ip (make test installs the tools)")
    trace = tmp_path / "trace.txt"
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = {k: v for k, v in os.environ.items() if k not in SWITCHES and k != "DO_NOT_TRACK"}
    inner = [
        sys.executable, str(driver), str(trace), "8500", str(WATCH_SECONDS), str(BIN / "sts"),
        str(ROOT / "examples" / "models.json"),
    ]  # fmt: skip
    done = subprocess.run(
        ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *inner],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answers = dict(line.rsplit(" ", 1) for line in done.stdout.split("\n") if line.strip())
    assert answers, done.stderr[-3000:]
    assert set(answers.values()) == {"200"}, answers
    assert outside_addresses(trace.read_text()) == []
