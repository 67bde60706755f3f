"""`GET /v1/openapi.json`: the OpenAPI 3.1 document, generated from the models.

The schemas come from pydantic; this module only says which route takes and
answers which model, so the document cannot drift from what is validated.
The one rule that depends on the server, each limit's maximum, comes from
its settings: the document is exactly as strict as the server it describes.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import falcon
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from nixjail import __version__
from nixjail.api.auth import needs
from nixjail.api.schemas import (
    CaseReport,
    EnvironmentPublication,
    ErrorBody,
    Health,
    ItemQuery,
    LeaseCompletion,
    LeaseGrant,
    LeaseRelease,
    LeaseRenewal,
    LeaseRequest,
    LeaseToken,
    ListQuery,
    StageReport,
    WaitQuery,
)
from nixjail.models import (
    CATALOG_NAME_PATTERN,
    LIMIT_FIELDS,
    STAGES,
    EnvironmentList,
    ResolvedStageLimits,
    Submission,
    SubmissionPage,
    SubmissionRequest,
    SubmissionSummary,
)
from nixjail.settings import Settings

REF_TEMPLATE = "#/components/schemas/{model}"
_IN: JsonSchemaMode = "validation"
_OUT: JsonSchemaMode = "serialization"
_MODELS: list[tuple[type[BaseModel], JsonSchemaMode]] = [
    (SubmissionRequest, _IN), (Submission, _OUT), (SubmissionPage, _OUT),
    (LeaseRequest, _IN), (LeaseToken, _IN), (StageReport, _IN), (CaseReport, _IN),
    (LeaseCompletion, _IN),
    (LeaseRelease, _IN), (LeaseGrant, _OUT), (LeaseRenewal, _OUT), (ErrorBody, _OUT),
    (Health, _OUT), (WaitQuery, _IN), (ItemQuery, _IN), (ListQuery, _IN),
    (SubmissionSummary, _OUT),
    (EnvironmentList, _OUT), (EnvironmentPublication, _IN),
]
_QUERY_MODELS = (WaitQuery, ItemQuery, ListQuery)

_ERRORS = {
    400: "Invalid JSON or an invalid parameter",
    401: "No token, or an unknown one",
    403: "The token lacks the role this needs",
    404: "No such submission, or no such route",
    409: "The submission's state does not allow this, or the lease is lost",
    413: "The body is larger than the server accepts",
    415: "The body is not application/json",
    422: "The body does not satisfy the schema or the server's maxima",
    429: "The queues are full; try again after Retry-After seconds",
    503: "The spool is not writable, or a part of `nixjail serve` is not running",
    507: "The spool's disk is full; try again after Retry-After seconds",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF_TEMPLATE.format(model=name)}


def _within_maxima(schemas: dict[str, Any], maxima: ResolvedStageLimits) -> None:
    """The request body with this server's maximum on every limit of every stage.

    A submission as the API answers it keeps the maxima-free copy
    (`AcceptedRequest`): it was accepted under the maxima of its day, which an
    operator may have lowered since.
    """
    request = schemas["SubmissionRequest"]
    accepted = copy.deepcopy(request)
    accepted["title"] = "AcceptedRequest"
    accepted["description"] = ("A submission's request as it was accepted, under the "
                               "server's maxima of that time")
    schemas["AcceptedRequest"] = accepted
    submission = schemas["Submission"]["properties"]
    assert submission["request"] == _ref("SubmissionRequest"), submission["request"]
    submission["request"] = _ref("AcceptedRequest")

    limits = copy.deepcopy(schemas["Limits"])
    limits["title"] = "RequestLimits"
    for stage in STAGES:
        name = f"{stage.capitalize()}Limits"
        stage_limits = copy.deepcopy(schemas["StageLimits"])
        stage_limits["title"] = name
        stage_limits["description"] = (f"Limits of the {stage} stage, each optional and "
                                       "at most this server's maximum")
        allowed = getattr(maxima, stage)
        for field in LIMIT_FIELDS:
            # `X | None`: the bound goes on the number, not on null
            number = next(option for option in stage_limits["properties"][field]["anyOf"]
                          if option.get("type") in ("number", "integer"))
            number["maximum"] = getattr(allowed, field)
        schemas[name] = stage_limits
        limits["properties"][stage] = _ref(name)
    schemas["RequestLimits"] = limits
    assert request["properties"]["limits"] == _ref("Limits"), request["properties"]["limits"]
    request["properties"]["limits"] = _ref("RequestLimits")


def _server_rules(request: dict[str, Any], settings: Settings) -> None:
    """The request's rules that depend on this server: the environments its
    catalog names, its test-case maximum and its callback prefixes, and which
    of shell_nix, environment and run_sh must be given."""
    properties = request["properties"]
    names = sorted(settings.catalog())
    properties["environment"]["anyOf"] = (
        [{"type": "string", "enum": names}] if names else []) + [{"type": "null"}]
    tests = next(option for option in properties["tests"]["anyOf"]
                 if option.get("type") == "array")
    tests["maxItems"] = settings.judging.max_tests
    prefixes = settings.callbacks.allowed_prefixes
    properties["callback_url"]["anyOf"] = ([{
        "type": "string", "maxLength": 2000,
        "pattern": "^(?:" + "|".join(re.escape(prefix) for prefix in prefixes) + ")",
    }] if prefixes else []) + [{"type": "null"}]

    def given(name: str) -> dict[str, Any]:
        return {"required": [name], "properties": {name: {"type": "string"}}}

    request["allOf"] = [
        {"oneOf": [given("shell_nix"), given("environment")]},
        {"anyOf": [given("run_sh"), given("environment")]},
    ]


class _Builder:
    def __init__(self, settings: Settings) -> None:
        refs, top = models_json_schema(_MODELS, ref_template=REF_TEMPLATE)
        self.refs = {model: refs[(model, mode)] for model, mode in _MODELS}
        self.schemas: dict[str, Any] = top["$defs"]
        _within_maxima(self.schemas, settings.limits_max)
        _server_rules(self.schemas["SubmissionRequest"], settings)
        self.query: dict[type[BaseModel], list[dict[str, Any]]] = {}
        for model in _QUERY_MODELS:
            name = self.refs[model]["$ref"].rsplit("/", 1)[1]
            schema = self.schemas.pop(name)  # parameters, not bodies
            self.query[model] = [
                {"name": prop, "in": "query", "required": False,
                 "schema": _not_null(sub), "style": "form", "explode": False,
                 **({"description": sub["description"]} if "description" in sub else {})}
                for prop, sub in schema["properties"].items()]

    def json_body(self, model: type[BaseModel] | tuple[type[BaseModel], ...],
                  description: str) -> dict[str, Any]:
        """A JSON body of `model`, or of any one of several models."""
        schema = ({"anyOf": [self.refs[m] for m in model]} if isinstance(model, tuple)
                  else self.refs[model])
        return {"description": description, "content": {falcon.MEDIA_JSON: {"schema": schema}}}

    def operation(self, op_id: str, summary: str, *, role: str | None,
                  answers: dict[int, tuple[type[BaseModel] | tuple[type[BaseModel], ...]
                                           | None, str]],
                  errors: tuple[int, ...] = (), query: type[BaseModel] | None = None,
                  path: tuple[dict[str, Any], ...] = (),
                  body: type[BaseModel] | None = None,
                  headers: dict[int, dict[str, Any]] | None = None) -> dict[str, Any]:
        op: dict[str, Any] = {"operationId": op_id, "summary": summary,
                              "security": [{"bearer": []}] if role else []}
        if role:
            op["description"] = f"Needs a {needs(role)} token (when the server has a tokens file)."
            if role == "submitter":
                op["description"] += (" A submitter token reaches the submissions it made "
                                      "(its tenant's) only; an admin token every one.")
            errors = (401, 403, *errors)
        parameters = list(path) + (self.query[query] if query else [])
        if parameters:
            op["parameters"] = parameters
            errors = (400, *errors)
        if body is not None:
            op["requestBody"] = {"required": True, **self.json_body(body, body.__doc__ or "")}
            errors = (400, 413, 415, 422, *errors)
        responses: dict[str, Any] = {}
        for status, (model, description) in answers.items():
            answer = (self.json_body(model, description) if model
                      else {"description": description})
            if headers and status in headers:
                answer["headers"] = headers[status]
            responses[str(status)] = answer
        for status in sorted(set(errors)):
            responses[str(status)] = self.json_body(ErrorBody, _ERRORS[status])
        op["responses"] = responses
        return op


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """`X | None` as a query parameter is just an optional X."""
    options = schema.get("anyOf")
    if options and {"type": "null"} in options:
        rest = [option for option in options if option != {"type": "null"}]
        stripped = {k: v for k, v in schema.items() if k not in ("anyOf", "default")}
        return {**stripped, **rest[0]} if len(rest) == 1 else {**stripped, "anyOf": rest}
    return {k: v for k, v in schema.items() if k != "title"}


def build_openapi(settings: Settings | None = None) -> dict[str, Any]:
    """The document of a server with these settings (the defaults when none)."""
    b = _Builder(settings or Settings())
    submission_id = {"name": "submission_id", "in": "path", "required": True,
                     "schema": {"type": "string"}}
    stage = {"name": "stage", "in": "path", "required": True,
             "schema": {"type": "string", "enum": list(STAGES)}}
    case_index = {"name": "index", "in": "path", "required": True,
                  "schema": {"type": "integer", "minimum": 0},
                  "description": "The case's place in the request's tests, from 0"}
    location = {"Location": {"description": "Where to look the submission up",
                             "schema": {"type": "string"}}}
    ended, pending = "The submission, which has ended", "The submission, still under way"
    lease_path = (submission_id,)
    paths: dict[str, Any] = {
        "/v1/submissions": {
            "post": b.operation(
                "createSubmission", "Submit a program", role="submitter",
                query=WaitQuery, body=SubmissionRequest,
                answers={200: (Submission, ended), 202: (Submission, pending)},
                headers={200: location, 202: location}, errors=(429, 507)),
            "get": b.operation(
                "listSubmissions", "List submissions, newest first", role="submitter",
                query=ListQuery, answers={200: (SubmissionPage, "One page")}),
        },
        "/v1/submissions/{submission_id}": {
            "get": b.operation(
                "getSubmission", "Look a submission up, or long-poll until it ends",
                role="submitter", path=(submission_id,), query=ItemQuery,
                answers={200: ((Submission, SubmissionSummary),
                               "The submission (its summary with view=summary)")},
                errors=(404,)),
            "delete": b.operation(
                "cancelSubmission", "Cancel a submission that has not ended",
                role="submitter", path=(submission_id,),
                answers={200: (Submission, "The submission, now cancelled")},
                errors=(404, 409)),
        },
        "/v1/leases": {
            "post": b.operation(
                "lease", "Lease the oldest job of a queue, waiting up to wait_s",
                role="worker", body=LeaseRequest,
                answers={200: (LeaseGrant, "A job"),
                         204: (None, "No job came within wait_s")}),
        },
        "/v1/leases/{submission_id}/renew": {
            "post": b.operation(
                "renewLease", "Extend a lease", role="worker", path=lease_path,
                body=LeaseToken, answers={200: (LeaseRenewal, "The renewed lease")},
                errors=(409,)),
        },
        "/v1/leases/{submission_id}/stages/{stage}": {
            "put": b.operation(
                "reportStage", "Record one stage's result", role="worker",
                path=(submission_id, stage), body=StageReport,
                answers={200: (Submission, "The submission")}, errors=(409,)),
        },
        "/v1/leases/{submission_id}/cases/{index}": {
            "put": b.operation(
                "reportCase", "Record one test case's result", role="worker",
                path=(submission_id, case_index), body=CaseReport,
                answers={200: (Submission, "The submission")}, errors=(404, 409)),
        },
        "/v1/leases/{submission_id}/complete": {
            "post": b.operation(
                "completeLease", "End the leased job", role="worker", path=lease_path,
                body=LeaseCompletion, answers={200: (Submission, "The submission")},
                errors=(409,)),
        },
        "/v1/leases/{submission_id}/release": {
            "post": b.operation(
                "releaseLease", "Give the job back to its queue", role="worker",
                path=lease_path, body=LeaseRelease,
                answers={200: (Submission, "The submission")}, errors=(409,)),
        },
        "/v1/openapi.json": {
            "get": {"operationId": "openapi", "summary": "This document", "security": [],
                    "responses": {"200": {"description": "OpenAPI 3.1",
                                          "content": {falcon.MEDIA_JSON: {}}}}},
        },
        "/healthz": {
            "get": b.operation("health", "Whether the spool is writable and every part runs",
                               role=None,
                               answers={200: (Health, "Healthy")}, errors=(503,)),
        },
        "/metrics": {
            "get": {"operationId": "metrics", "summary": "Prometheus metrics", "security": [],
                    "responses": {"200": {"description": "Prometheus text format",
                                          "content": {"text/plain": {
                                              "schema": {"type": "string"}}}}}},
        },
        "/v1/environments": {
            "get": b.operation(
                "listEnvironments", "The catalog of named environments, and which are built",
                role="submitter", answers={200: (EnvironmentList, "Every catalog entry")}),
        },
        "/v1/environments/{name}": {
            "put": b.operation(
                "publishEnvironment", "A cache builder's word that it built an entry",
                role="worker", body=EnvironmentPublication,
                path=({"name": "name", "in": "path", "required": True,
                       "schema": {"type": "string", "pattern": CATALOG_NAME_PATTERN},
                       "description": "The catalog entry's own name (not an alias)"},),
                answers={204: (None, "Recorded")}, errors=(404,)),
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "nixjail", "version": __version__,
                 "description": "Runs untrusted submissions that bring their own Nix "
                 "toolchain. Every error answers with the ErrorBody schema."},
        "paths": paths,
        "components": {
            "schemas": b.schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


class OpenApiResource:
    def __init__(self, settings: Settings) -> None:
        self._document = json.dumps(build_openapi(settings), indent=1).encode()

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_JSON
        resp.data = self._document
