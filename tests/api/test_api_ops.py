"""What operators and tools read: health, metrics, the OpenAPI document."""

from __future__ import annotations

import json
import re
import shutil

import falcon.inspect
from api_helpers import WORKER, Api, sample_request

from nixjail.api import create_app
from nixjail.api.openapi import build_openapi
from nixjail.settings import Settings
from nixjail.spool import Spool


def test_healthz_is_ok(api: Api) -> None:
    answer = api.get("/healthz", token=None)
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok", "parts": {}}


def test_healthz_is_503_when_the_spool_cannot_be_written(api: Api) -> None:
    shutil.rmtree(api.spool.run_dir / "leases")
    answer = api.get("/healthz", token=None)
    assert answer.status_code == 503
    body = answer.json()
    assert body["title"] == "unavailable"
    assert body["errors"][0]["field"].endswith("leases")


def _sample(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if not line.startswith(name + ("{" if labels else " ")):
            continue
        if all(f'{key}="{value}"' in line for key, value in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {name} {labels}")


def test_metrics_count_requests_submissions_and_jobs(api: Api) -> None:
    api.submit()
    api.submit(cache=False)
    api.get("/v1/submissions/" + "0" * 26)
    api.get("/nowhere")
    api.post("/v1/leases", json={"queue": "run", "holder": "w"}, token=WORKER)
    answer = api.get("/metrics", token=None)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/plain")
    text = answer.text
    assert _sample(text, "nixjail_submissions_created_total") == 2
    assert _sample(text, "nixjail_api_requests_total", route="/v1/submissions",
                   method="POST", status="202") == 2
    assert _sample(text, "nixjail_api_requests_total",
                   route="/v1/submissions/{submission_id}", method="GET", status="404") == 1
    assert _sample(text, "nixjail_api_requests_total", route="unmatched", status="404") == 1
    assert _sample(text, "nixjail_api_request_duration_seconds_count",
                   route="/v1/submissions", method="POST") == 2
    assert _sample(text, "nixjail_jobs", queue="dependencies", state="queued") == 1
    assert _sample(text, "nixjail_jobs", queue="run", state="leased") == 1
    assert _sample(text, "nixjail_jobs", queue="run", state="queued") == 0


def test_many_apps_have_their_own_registries(tmp_path) -> None:
    settings = Settings(spool_dir=tmp_path / "s", run_dir=tmp_path / "r")
    spool = Spool(settings.spool_dir, settings.run_dir)
    for _ in range(3):
        create_app(spool, settings)


def test_openapi_is_served_and_names_every_route(api: Api) -> None:
    answer = api.get("/v1/openapi.json", token=None)
    assert answer.status_code == 200
    document = answer.json()
    assert document == json.loads(json.dumps(build_openapi()))
    assert document["openapi"].startswith("3.1")
    app = create_app(api.spool, api.settings)
    for route in falcon.inspect.inspect_routes(app):
        # OpenAPI names a path parameter without falcon's converter.
        path = re.sub(r"\{(\w+):[^}]*\}", r"{\1}", route.path)
        documented = document["paths"].get(path)
        assert documented is not None, route.path
        methods = {method.method.lower() for method in route.methods
                   if method.internal is False and method.method != "OPTIONS"}
        assert methods == set(documented), route.path
    # Every reference resolves.
    schemas = document["components"]["schemas"]
    for ref in re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', answer.text):
        assert ref in schemas
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    create = document["paths"]["/v1/submissions"]["post"]
    assert create["security"] == [{"bearer": []}]
    assert {"200", "202", "400", "401", "403", "413", "415", "422"} <= set(create["responses"])
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/SubmissionRequest"}
    assert document["paths"]["/healthz"]["get"]["security"] == []


def test_location_of_a_public_url(make_api) -> None:
    api = make_api(public_url="https://jail.example.org")
    answer = api.post("/v1/submissions", json=sample_request())
    assert answer.headers["Location"] == (
        f"https://jail.example.org/v1/submissions/{answer.json()['id']}")


def test_stopping_lets_requests_under_way_answer(tmp_path) -> None:
    import threading
    import time

    import requests
    from api_helpers import BOTH, start_server

    api, stop = start_server(tmp_path)
    created = api.submit()
    answers = []

    def long_poll() -> None:
        answers.append(requests.get(f"{api.url}/v1/submissions/{created['id']}?wait=1",
                                    headers={"Authorization": f"Bearer {BOTH}"}, timeout=10))

    thread = threading.Thread(target=long_poll)
    thread.start()
    time.sleep(0.3)
    started = time.monotonic()
    stop()
    thread.join()
    assert answers[0].status_code == 200
    assert answers[0].json()["status"] == "queued"
    assert time.monotonic() - started < 4
    try:
        requests.get(f"{api.url}/healthz", timeout=2)
    except requests.ConnectionError:
        pass
    else:
        raise AssertionError("still accepting after stop")
