"""Stage reports of remote workers: every legal output is delivered, however
it grows in JSON, and an illegal one is refused naming what is wrong."""

from __future__ import annotations

import json

import pytest
from api_helpers import WORKER, Api

from nixjail.client import ApiInvalidInput, Client
from nixjail.models import NOTE_CHARS, StageResult, output_chars_max
from nixjail.settings import JSON_BYTES_PER_OUTPUT_BYTE, Settings
from nixjail.spool import Queue

# A report that gives its times is stored as given.
TIMES = {"started_at": "2026-01-01T00:00:00Z", "finished_at": "2026-01-01T00:00:01Z"}
# The largest output cap any stage may have (the dependencies stage's).
LARGEST_KIB = max(limits.output_kib for _, limits in Settings().limits_max)


def leased(api: Api, queue: Queue, **limits: dict) -> tuple[Client, object]:
    api.submit(cache=queue is Queue.dependencies, limits=limits)
    worker = Client(api.url, WORKER, timeout_s=120)
    job = worker.lease(queue, "test-worker", wait_s=5)
    assert job is not None
    return worker, job.lease


def test_the_largest_legal_report_is_delivered_in_the_worst_json(api: Api) -> None:
    # Both outputs as large as a stage's may be, nixjail's note included, of
    # control characters, which JSON sends as six bytes each (`\u0001`).
    worker, lease = leased(api, Queue.dependencies,
                           dependencies={"output_kib": LARGEST_KIB})
    chars = output_chars_max(LARGEST_KIB)
    result = StageResult(status="output_limit", stdout="\x01" * chars,
                         stderr="\ufffd" * chars, stdout_truncated=True, **TIMES)
    body = json.dumps({"token": lease.token, "result": result.model_dump(mode="json")})
    assert len(body) > JSON_BYTES_PER_OUTPUT_BYTE * 2 * chars
    assert len(body) > 40 * api.settings.api.max_body_bytes  # far above the usual cap
    assert len(body) <= api.settings.max_report_bytes
    # As the remote worker sends it.
    answer = worker.report_stage(lease, "dependencies", result)
    assert answer.stages.dependencies == result
    assert api.spool.get(lease.submission_id).stages.dependencies == result


def test_a_report_above_the_largest_legal_one_is_413_naming_the_body(api: Api) -> None:
    _, lease = leased(api, Queue.run)
    limit = api.settings.max_report_bytes
    head = json.dumps({"token": lease.token, "result": {"status": "ok", "stdout": ""}})
    body = head[:-3] + "x" * (limit + 1 - len(head)) + head[-3:]
    assert len(body) == limit + 1
    answer = api.request("PUT", f"/v1/leases/{lease.submission_id}/stages/run", token=WORKER,
                         data=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 413, answer.text[:300]
    error = answer.json()["errors"][0]
    assert error["field"] == "body"
    assert error["reason"].startswith(f"the body is larger than {limit} bytes, the most a "
                                      "stage report takes")
    assert api.spool.get(lease.submission_id).stages.run is None


@pytest.mark.parametrize("name", ["stdout", "stderr"])
def test_an_output_longer_than_its_stage_may_hold_is_refused_naming_it(api: Api,
                                                                      name: str) -> None:
    worker, lease = leased(api, Queue.run, run={"output_kib": 8})
    chars = output_chars_max(8)
    assert chars == 8 * 1024 + NOTE_CHARS
    worker.report_stage(lease, "run", StageResult(status="ok", **{name: "a" * chars}))
    encoded = output_chars_max(8, base64=True)
    worker.report_stage(lease, "run", StageResult(
        status="ok", **{name: "a" * encoded, f"{name}_encoding": "base64"}))
    with pytest.raises(ApiInvalidInput) as refused:
        worker.report_stage(lease, "run", StageResult(status="ok", **{name: "a" * (chars + 1)}))
    assert refused.value.field == f"result.{name}"
    assert refused.value.reason == (
        f"{chars + 1} characters is more than the run stage's output_kib of 8 lets it "
        f"hold ({chars}, nixjail's own note included)")
    assert len(getattr(api.spool.get(lease.submission_id).stages.run, name)) == encoded


def test_other_worker_bodies_keep_the_usual_cap(api: Api) -> None:
    _, lease = leased(api, Queue.run)
    reason = "x" * api.settings.api.max_body_bytes
    answer = api.post(f"/v1/leases/{lease.submission_id}/release", token=WORKER,
                      json={"token": lease.token, "reason": reason})
    assert answer.status_code == 413
    assert answer.json()["errors"][0]["reason"] == (
        f"the body is larger than {api.settings.api.max_body_bytes} bytes")
