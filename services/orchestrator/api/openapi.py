"""What the generated OpenAPI document needs beyond the routes: the schemas of bodies a route reads
itself (a workflow definition, JSON or YAML) and the links between operations, so that a client
generator or a stateful fuzzer can follow an answer to the next call (submit → read, pause, …)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from services.orchestrator.engine.dag import WorkflowDefinition

REF = "#/components/schemas/{model}"

# Models described in ``components`` though no route names them as its body (``$ref``'d by hand).
BODY_MODELS: tuple[type[BaseModel], ...] = (WorkflowDefinition,)


def ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _from(pointer: str) -> str:
    return f"$response.body#{pointer}"


_MISSION = {"mission_id": _from("/id")}
_SCHEDULE = {"name": _from("/name")}
_TRIGGER = {"name": _from("/name")}

# operationId → status → {link name: (target operationId, parameters, requestBody)}.
LINKS: dict[str, dict[str, dict[str, tuple[str, dict[str, str], dict[str, str] | None]]]] = {
    "register_workflow": {
        "201": {
            "GetWorkflow": ("get_workflow", {"name": _from("/name"), "version": _from("/version")}, None),
            "SubmitMission": (
                "submit_mission",
                {},
                {"workflow": _from("/name"), "version": _from("/version")},
            ),
        }
    },
    "submit_mission": {
        "202": {
            "GetMission": ("get_mission", _MISSION, None),
            "PauseMission": ("pause_mission", _MISSION, None),
            "ResumeMission": ("resume_mission", _MISSION, None),
            "CancelMission": ("cancel_mission", _MISSION, None),
            "GetMissionTimeline": ("get_mission_timeline", _MISSION, None),
            "GetStepResults": ("get_step_results", _MISSION, None),
            "RerunMission": ("rerun_mission", _MISSION, None),
        }
    },
    "rerun_mission": {
        "202": {
            "GetMission": ("get_mission", _MISSION, None),
            "CancelMission": ("cancel_mission", _MISSION, None),
        }
    },
    "list_missions": {"200": {"GetMission": ("get_mission", {"mission_id": _from("/items/0/id")}, None)}},
    "get_mission": {
        "200": {
            "GetStepResults": (
                "get_step_results",
                {"mission_id": _from("/id"), "key": _from("/steps/0/key")},
                None,
            ),
            "ApproveStep": ("approve_step", {"mission_id": _from("/id"), "key": _from("/steps/0/key")}, None),
            "RejectStep": ("reject_step", {"mission_id": _from("/id"), "key": _from("/steps/0/key")}, None),
        }
    },
    "list_dead_letters": {
        "200": {"ReplayDeadLetter": ("replay_dead_letter", {"dead_letter_id": _from("/items/0/id")}, None)}
    },
    "create_schedule": {
        "201": {
            "GetSchedule": ("get_schedule", _SCHEDULE, None),
            "UpdateSchedule": ("update_schedule", _SCHEDULE, None),
            "PauseSchedule": ("pause_schedule", _SCHEDULE, None),
            "ResumeSchedule": ("resume_schedule", _SCHEDULE, None),
            "TriggerSchedule": ("trigger_schedule", _SCHEDULE, None),
            "BackfillSchedule": ("backfill_schedule", _SCHEDULE, None),
            "DeleteSchedule": ("delete_schedule", _SCHEDULE, None),
        }
    },
    "create_trigger": {
        "201": {
            "GetTrigger": ("get_trigger", _TRIGGER, None),
            "ReceiveTriggerWebhook": ("receive_trigger_webhook", _TRIGGER, None),
            "DeleteTrigger": ("delete_trigger", _TRIGGER, None),
        }
    },
    "create_api_key": {"201": {"RevokeApiKey": ("revoke_api_key", {"key_id": _from("/id")}, None)}},
    "put_agent": {"200": {"GetAgent": ("get_agent", {"name": _from("/name")}, None)}},
}


def install_openapi(app: FastAPI) -> None:
    """``app.openapi()`` with ``BODY_MODELS`` in ``components`` and ``LINKS`` on the answers."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = generate()
        complete(document)
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def complete(document: dict[str, Any]) -> None:
    _exact_integer_bounds(document)
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for model in BODY_MODELS:
        schema = model.model_json_schema(by_alias=True, ref_template=REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    operations = {
        operation["operationId"]: operation
        for methods in document.get("paths", {}).values()
        for operation in methods.values()
        if isinstance(operation, dict) and "operationId" in operation
    }
    for operation in operations.values():
        _errors_as_json(operation)
    for source, answers in LINKS.items():
        for status, links in answers.items():
            response = operations[source]["responses"][status]
            documented = response.setdefault("links", {})
            for name, (target, parameters, body) in links.items():
                assert target in operations, f"link {source} → {target}: no such operation"
                link: dict[str, Any] = {"operationId": target}
                if parameters:
                    link["parameters"] = parameters
                if body is not None:
                    link["requestBody"] = body
                documented[name] = link


_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


def _exact_integer_bounds(node: Any) -> None:
    """FastAPI's OpenAPI models hold bounds as floats: ``le=2**62`` comes out as ``4.611686018427388e18``,
    which a client (or a fuzzer) compares approximately. An integer's bounds are written as integers."""
    if isinstance(node, dict):
        if node.get("type") == "integer":
            for bound in _BOUNDS:
                value = node.get(bound)
                if isinstance(value, float) and value.is_integer():
                    node[bound] = int(value)
        for child in node.values():
            _exact_integer_bounds(child)
    elif isinstance(node, list):
        for child in node:
            _exact_integer_bounds(child)


_ERROR_BODY = {"$ref": REF.format(model="ErrorBody")}


def _errors_as_json(operation: dict[str, Any]) -> None:
    """An error is JSON even where the success is not (the SSE stream): FastAPI gives a declared
    response the route's own media type."""
    for status, answer in operation.get("responses", {}).items():
        content = answer.get("content", {})
        if status.startswith(("4", "5")) and any(media.get("schema") == _ERROR_BODY for media in content.values()):
            answer["content"] = {"application/json": {"schema": _ERROR_BODY}}
