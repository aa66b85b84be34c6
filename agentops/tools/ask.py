"""ask_person: the agent asks a person a question and waits for the answer.

Granted like any tool (scope ``{}``, or ``{"approver_group": "<Django group>"}`` to route the question
to that group; the grant's own ``approver_group`` wins when set), counted like any call (rate limit,
daily caps, tool calls). The controller carries the call out, not this module: it records the
question as a ``question`` decision and the run waits with its worker freed; the person's answer
comes back as the call's observation ("A person answered: ..."), data like any tool's output, never
an instruction. Nobody answering in time: the grant's ``on_timeout`` says whether the model is told
"No one answered in time." and goes on, or the run halts (the default).
"""

from __future__ import annotations

from typing import Any

from agentops.tools.registry import Tool, ToolContext, ToolError, ToolResult, register

ASK_PERSON = "ask_person"
QUESTION_MAX = 2000
OPTIONS_MAX = 10
OPTION_MAX = 200


def _never(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
    # The controller answers this tool itself (runs/dispatch.py); an executor that ran would have no person to ask.
    raise ToolError("ask_person is carried out by the controller: a person's answer comes back as this call's observation")


def question_request(arguments: dict[str, Any]) -> dict[str, Any]:
    """What the decision asks: the question and its options (none: a free-text answer)."""
    return {"question": str(arguments.get("question", "")), "options": [str(o) for o in arguments.get("options") or []]}


def approver_group_of(scope: dict[str, Any] | None, grant_group: str = "") -> str:
    """Who may answer: the grant's approver group, else the one its scope names, else anyone who decides."""
    return grant_group or str((scope or {}).get("approver_group") or "")


register(
    Tool(
        name=ASK_PERSON,
        description=(
            "Ask a person a question and wait for the answer (minutes or hours; the run pauses meanwhile). "
            "Use it when you need a decision or a fact only a person has. Give options when the answer is one of a few choices. "
            "Do not ask the same question twice: the answer you got stands."
        ),
        input_schema={
            "type": "object",
            "properties": {
                "question": {"type": "string", "minLength": 1, "maxLength": QUESTION_MAX},
                "options": {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": OPTION_MAX}, "maxItems": OPTIONS_MAX},
            },
            "required": ["question"],
            "additionalProperties": False,
        },
        risk_class="read",
        scope_schema={
            "type": "object",
            "properties": {"approver_group": {"type": "string", "maxLength": 150}},
            "additionalProperties": False,
        },
        executor=_never,
        side_effecting=False,
    )
)
