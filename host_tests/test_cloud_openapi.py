"""/openapi.json against the live service (issue 25, item 5): schemathesis generates requests
from the document (valid and invalid ones, bounded so that it runs in well under a minute),
sends them to the running service with one charger behind it, and finds no response that
breaks the document and no 500. 502, 503 and 504 are documented answers (a charger's
garbled reply, an offline charger or broker, a silent charger) and are allowed."""
import json
import subprocess
import sys

import httpx
import pytest

from cloud_kit import Cloud, RigCharger
from e2e import wait_for

CONFIG = """
[checks.not_a_server_error]
expected-statuses = ["2xx", "3xx", "4xx", "502", "503", "504"]
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "404", "405", "413", "422"]
"""
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_schema_conformance,negative_data_rejection")


@pytest.fixture(scope="module")
def live(module_broker, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("openapi")
    b = module_broker
    cloud = Cloud(b, tmp_path / "cloud.db", "--live-wait", "1", "--write-wait", "1").start()
    ch = RigCharger(b, "charger-1", tmp_path / "charger-1")
    try:
        with cloud.client() as api:
            wait_for(lambda: api.get("/ev-charger/charger-1").status_code == 200, 10)
        yield cloud
    finally:
        ch.close()
        cloud.stop()


def test_the_document_describes_every_path_and_error(live):
    doc = httpx.get(live.url + "/openapi.json").json()
    paths = doc["paths"]
    assert set(paths) == {"/ev-charger", "/ev-charger/{deviceId}",
                          "/ev-charger/{deviceId}/settings", "/ev-charger/{deviceId}/limit",
                          "/actions/{actionId}", "/webhooks", "/webhooks/{webhookId}", "/health"}
    post = paths["/ev-charger/{deviceId}"]["post"]
    assert {"202", "400", "401", "404", "409", "413", "422", "503", "504"} <= set(post["responses"])
    assert "HTTPValidationError" not in json.dumps(doc)  # our 400, not FastAPI's 422
    codes = doc["components"]["schemas"]["Error"]["properties"]["code"]["enum"]
    assert {"DEVICE_OFFLINE", "DEVICE_TIMEOUT", "DEVICE_NOT_FOUND", "CONFLICT",
            "SETTING_OUT_OF_RANGE", "UNAUTHORIZED"} <= set(codes)


def test_schemathesis_finds_nothing(live, tmp_path):
    (tmp_path / "schemathesis.toml").write_text(CONFIG)
    # One worker: with two, hypothesis's lambda descriptions call ast.parse from two threads
    # at once, which CPython 3.11.7 can fail with "AST constructor recursion depth mismatch"
    # (an error of the tool's, seen once in a loaded make test; fixed in later CPythons).
    r = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "--config-file",
         str(tmp_path / "schemathesis.toml"), "run", live.url + "/openapi.json",
         "-H", "Authorization: Bearer " + live.key, "--checks", CHECKS,
         "--max-examples", "4", "--seed", "25", "--workers", "1", "--max-time", "15",
         "--request-timeout", "10", "--report-dir", str(tmp_path / "report")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)  # its cache stays there
    out = r.stdout + r.stderr
    (tmp_path / "schemathesis.out").write_text(out)
    assert r.returncode == 0, out[-6000:]
    assert "No issues found" in out or "passed" in out, out[-3000:]
