"""The OpenAPI 3.1 description of /api/v1, written by hand next to the views it describes."""

from __future__ import annotations

from typing import Any


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERRORS = {
    "400": _json(_ref("Error"), "Bad request"),
    "401": _json(_ref("Error"), "Missing, invalid, revoked or expired token"),
    "403": _json(_ref("Error"), "The token's scope or its user's role does not allow this"),
    "404": {"description": "Not found"},
}


# Text a person or a script sends: anything but NUL (no database column stores it); "with content"
# also needs one visible character (a reason of spaces is no reason).
_TEXT: dict[str, Any] = {"type": "string", "pattern": r"^[^\x00]*$"}
_TEXT_WITH_CONTENT: dict[str, Any] = {"type": "string", "pattern": r"^[^\x00]*\S[^\x00]*$"}


def _id(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "integer"}}


_DECISION_KINDS = ["approval", "budget_extension", "question", "loop_escalation", "config_change"]


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


SCHEMA: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "agentops API",
        "version": "1",
        "description": "Runs, steps, approvals and the kill switch. Authenticate with `Authorization: Bearer <token>` "
        "(create tokens on the dashboard's API tokens page). A token acts as its user, narrowed to its scope, until "
        "it expires: `read` may only GET; `operate` may also start and stop runs and decide approvals; `admin` may "
        "also operate the kill switch. The user's role still applies: approvers may decide approvals and stop runs, "
        "admins may operate the kill switch.",
    },
    "servers": [{"url": "/api/v1"}],
    "security": [{"bearer": []}],
    "paths": {
        "/runs/": {
            "get": {
                "summary": "List runs, newest first",
                "parameters": [
                    _query(
                        "status",
                        {"type": "string", "enum": ["queued", "running", "waiting_approval", "succeeded", "failed", "budget_exceeded", "killed", "rejected"]},
                        "only runs in this status",
                    ),
                    _query("agent", _TEXT, "agent slug"),
                    _query("before_id", {"type": "integer", "minimum": 0}, "page: runs with a smaller id (use next_before_id)"),
                    _query("limit", {"type": "integer", "minimum": 0, "maximum": 500, "default": 50}, "page size"),
                ],
                "responses": {
                    "200": _json(
                        {"type": "object", "properties": {"runs": {"type": "array", "items": _ref("Run")}, "next_before_id": {"type": ["integer", "null"]}}}
                    ),
                    **_ERRORS,
                },
            },
            "post": {
                "summary": "Start a run of an agent (approvers and admins)",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["agent", "input"],
                                "additionalProperties": False,
                                "properties": {
                                    "agent": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9-]{0,99}$", "description": "agent slug"},
                                    "input": _TEXT_WITH_CONTENT | {"maxLength": 100_000, "description": "what the run should do"},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "201": _json(_ref("Run"), "Created (queued) and handed to a worker"),
                    "202": _json(
                        _ref("Run"), "Created (queued); the task broker is unreachable, so the reaper hands it to a worker when it is back (see `dispatch`)"
                    ),
                    "503": _json(_ref("Error"), "The database is unavailable: nothing was created"),
                    "409": _json(_ref("Error"), "Refused: kill switch, paused agent or daily cap"),
                    **_ERRORS,
                },
            },
        },
        "/runs/{run_id}/": {"get": {"summary": "One run", "parameters": [_id("run_id")], "responses": {"200": _json(_ref("Run")), **_ERRORS}}},
        "/runs/{run_id}/steps/": {
            "get": {
                "summary": "A run's steps in seq order, after a seq",
                "parameters": [
                    _id("run_id"),
                    _query("after", {"type": "integer", "minimum": 0, "default": 0}, "only steps with a larger seq (use next_after)"),
                    _query("limit", {"type": "integer", "minimum": 0, "maximum": 500, "default": 200}, "page size"),
                ],
                "responses": {
                    "200": _json(
                        {"type": "object", "properties": {"steps": {"type": "array", "items": _ref("Step")}, "next_after": {"type": ["integer", "null"]}}}
                    ),
                    **_ERRORS,
                },
            }
        },
        "/runs/{run_id}/cancel/": {
            "post": {
                "summary": "Stop a run (approver)",
                "parameters": [_id("run_id")],
                "requestBody": {
                    "content": {
                        "application/json": {"schema": {"type": "object", "additionalProperties": False, "properties": {"reason": _TEXT | {"maxLength": 2000}}}}
                    }
                },
                "responses": {"200": _json(_ref("Run")), **_ERRORS},
            }
        },
        "/approvals/": {
            "get": {
                "summary": "List decisions of every kind (pending by default, soonest expiry first)",
                "parameters": [
                    _query("status", {"type": "string", "enum": ["pending", "approved", "rejected", "expired"], "default": "pending"}, "status"),
                    _query("kind", {"type": "string", "enum": _DECISION_KINDS}, "only decisions of this kind"),
                    _query("limit", {"type": "integer", "minimum": 0, "maximum": 500, "default": 100}, "page size"),
                ],
                "responses": {"200": _json({"type": "object", "properties": {"approvals": {"type": "array", "items": _ref("Approval")}}}), **_ERRORS},
            }
        },
        "/approvals/{approval_id}/decide/": {
            "post": {
                "summary": "Decide (approver): approve or reject, with edited arguments (an approval) or an answer; exactly one decision wins",
                "parameters": [_id("approval_id")],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["approve"],
                                "additionalProperties": False,
                                "properties": {
                                    "approve": {"type": "boolean"},
                                    "comment": _TEXT
                                    | {
                                        "maxLength": 4000,
                                        "description": "required to reject an approval, a question or a configuration change (it goes back to whoever asked)",
                                    },
                                    "edited_arguments": {
                                        "type": "object",
                                        "description": "approval only: the arguments to run instead of the model's, checked as a model's call is",
                                    },
                                    "answer": _TEXT
                                    | {
                                        "maxLength": 4000,
                                        "description": "question: the answer (one of its options if it has any); budget_extension: the amount (default: the one proposed); loop_escalation: continue or stop",
                                    },
                                },
                            }
                        }
                    },
                },
                "responses": {"200": _json(_ref("Approval")), "409": _json(_ref("Error"), "Already decided or expired"), **_ERRORS},
            }
        },
        "/kill-switch/": {
            "get": {"summary": "The kill switch state", "responses": {"200": _json(_ref("KillSwitch")), **_ERRORS}},
            "post": {
                "summary": "Engage or release the kill switch (admin); a reason is required",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["engaged", "reason"],
                                "additionalProperties": False,
                                "properties": {"engaged": {"type": "boolean"}, "reason": _TEXT_WITH_CONTENT | {"maxLength": 2000}},
                            }
                        }
                    },
                },
                "responses": {"200": _json(_ref("KillSwitch")), **_ERRORS},
            },
        },
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]},
            "Run": {
                "type": "object",
                "properties": {
                    "id": {"type": "integer"},
                    "agent": {"type": "string"},
                    "status": {"type": "string"},
                    "status_reason": {"type": "string"},
                    "outcome": {
                        "type": "string",
                        "description": "what the run achieved: pr_opened, pr_merged, report_submitted, acted, no_change, refused, gate_failed, budget, loop, killed_by_switch, stopped_by_person, rejected, malformed_output, truncated, model_refused, infrastructure, error (empty while active)",
                    },
                    "outcome_detail": {"type": "string"},
                    "trigger_kind": {"type": "string"},
                    "input": {"type": "string"},
                    "model": {"type": "string"},
                    "created_at": {"type": "string", "format": "date-time"},
                    "started_at": {"type": ["string", "null"], "format": "date-time"},
                    "finished_at": {"type": ["string", "null"], "format": "date-time"},
                    "tokens": {"type": "integer"},
                    "cost_usd": {"type": "string", "description": "decimal"},
                    "tool_calls": {"type": "integer"},
                    "iterations": {"type": "integer"},
                    "steps": {"type": "integer"},
                    "result": {"type": "object"},
                    "url": {"type": "string"},
                },
            },
            "Step": {
                "type": "object",
                "properties": {
                    "seq": {"type": "integer"},
                    "kind": {"type": "string"},
                    "payload": {"type": "object"},
                    "model_id": {"type": "string"},
                    "input_tokens": {"type": "integer"},
                    "output_tokens": {"type": "integer"},
                    "cost_usd": {"type": "string"},
                    "latency_ms": {"type": "integer"},
                    "created_at": {"type": "string", "format": "date-time"},
                },
            },
            "Approval": {
                "type": "object",
                "description": "A decision: what exactly is asked, why, the evidence, who may decide and when it expires.",
                "properties": {
                    "id": {"type": "integer"},
                    "kind": {"type": "string", "enum": _DECISION_KINDS},
                    "run_id": {"type": ["integer", "null"]},
                    "agent_id": {"type": ["integer", "null"]},
                    "agent": {"type": ["string", "null"]},
                    "asked": {"type": "string"},
                    "tool": {"type": "string"},
                    "arguments": {"type": "object"},
                    "edited_arguments": {"type": ["object", "null"]},
                    "request": {"type": "object"},
                    "evidence": {"type": "object"},
                    "answer": {"type": "string"},
                    "options": {"type": "array", "items": {"type": "string"}},
                    "approver_group": {"type": "string"},
                    "who_may_decide": {"type": "string"},
                    "on_expiry": {"type": "string", "enum": ["halt", "continue"]},
                    "requested_by": {"type": ["string", "null"]},
                    "risk_class": {"type": "string", "enum": ["read", "write", "irreversible"]},
                    "reason": {"type": "string"},
                    "why_needed": {"type": "string"},
                    "status": {"type": "string", "enum": ["pending", "approved", "rejected", "expired"]},
                    "requested_at": {"type": "string", "format": "date-time"},
                    "expires_at": {"type": "string", "format": "date-time"},
                    "decided_at": {"type": ["string", "null"], "format": "date-time"},
                    "decided_by": {"type": ["string", "null"]},
                    "comment": {"type": "string"},
                },
            },
            "KillSwitch": {
                "type": "object",
                "properties": {
                    "engaged": {"type": "boolean"},
                    "engaged_at": {"type": ["string", "null"], "format": "date-time"},
                    "engaged_by": {"type": ["string", "null"]},
                    "reason": {"type": "string"},
                    "released_at": {"type": ["string", "null"], "format": "date-time"},
                    "released_by": {"type": ["string", "null"]},
                    "release_reason": {"type": "string"},
                },
            },
        },
    },
}
