"""The conversation a run shows its model, as pure functions over step data.

A run's memory is its steps: a worker that starts (fresh, after an approval, or taking over from a
dead one) rebuilds the conversation from them, and then mirrors each step it commits with the same
small functions. Nothing here reads or writes the database, so all of it is tested on plain data.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from agentops.llm.checks import ECHOABLE_BLOCKS
from agentops.runs.models import StepKind

# The newest part of a summary kept when the summary itself grows too long.
SUMMARY_LIMIT = 40_000
# How much trigger data (untrusted) the first message carries.
TRIGGER_DATA_LIMIT = 20_000


@dataclass
class PendingCall:
    id: str
    name: str
    arguments: Any


class StepData(Protocol):
    """What the rebuild needs of a step (a ``Step`` row, or any object with these attributes)."""

    pk: Any
    kind: str
    payload: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class Observation:
    """One recorded observation, as the tallies and the loop detector replay it."""

    call: PendingCall | None
    text: str
    is_error: bool
    refused: str | None
    effect: bool
    counts_for_loops: bool
    rejected: bool


@dataclass(frozen=True)
class LoopMark:
    """The controller resolved a loop detection without stopping, at this point of the trace (a nudge,
    a question to a person, a person's "continue"): replayed to the loop detector in order."""

    escalation: str  # "nudge", "ask" or "continue"
    detection: dict[str, Any]  # guardrails.loops.Detection.as_payload()


@dataclass
class Conversation:
    """The messages the model is shown, and what the controller knows about the turns in them."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    input_text: str = ""
    summary: str = ""
    unusable_turns: int = 0  # consecutive model turns the controller could not act on
    last_turn_text: str = ""
    last_turn_calls: list[PendingCall] = field(default_factory=list)
    last_turn_final: bool = False  # the last turn asked for nothing: the agent says it is done
    seen_call_ids: set[str] = field(default_factory=set)
    recorded_tool_calls: set[str] = field(default_factory=set)  # tool_call steps written
    observed: set[str] = field(default_factory=set)  # observation steps written
    tool_times: list[float] = field(default_factory=list)  # when each recorded tool call started
    # Replayed by the rebuild only: the observations, and the loop detections resolved between them.
    observations: list[Observation | LoopMark] = field(default_factory=list)

    def add_turn(self, content: list[dict[str, Any]], text: str, calls: list[PendingCall], note: str | None) -> None:
        """A model turn the controller just recorded; ``note``: the controller's answer to an unusable turn."""
        self.messages.append({"role": "assistant", "content": content})
        if note:
            self.messages.append({"role": "user", "content": note})
            self.unusable_turns += 1
        else:
            self.unusable_turns = 0
        self.last_turn_text = text
        self.last_turn_calls = calls
        self.seen_call_ids.update(c.id for c in calls)
        self.last_turn_final = not calls and not note

    def add_note(self, text: str) -> None:
        """A message of the controller's own to the model (a loop nudge), after the last results."""
        last = self.messages[-1] if self.messages else None
        if last and last["role"] == "user" and isinstance(last["content"], list):
            last["content"].append({"type": "text", "text": text})
        else:
            self.messages.append({"role": "user", "content": [{"type": "text", "text": text}]})

    def add_result(self, tool_use_id: str, text: str, is_error: bool) -> None:
        """An observation the controller just recorded: joins the results of the same turn."""
        self.observed.add(tool_use_id)
        block = tool_result_block(tool_use_id, text, is_error)
        last = self.messages[-1] if self.messages else None
        if last and last["role"] == "user" and isinstance(last["content"], list) and last["content"] and last["content"][0].get("type") == "tool_result":
            last["content"].append(block)
        else:
            self.messages.append({"role": "user", "content": [block]})


def tool_result_block(tool_use_id: str, text: str, is_error: bool) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_use_id, "content": text or "(no output)"}
    if is_error:
        block["is_error"] = True
    return block


def input_message(text: str, context: Mapping[str, Any] | None) -> str:
    """The first message: the person's or trigger's input, with the trigger's data framed as data.

    Trigger data is untrusted input (an error message can carry instructions): the model is shown
    it as data, and nothing in the controller acts on its content."""
    if context:
        return f"{text}\n\n<trigger_data>\n{json.dumps(context, indent=2, default=str)[:TRIGGER_DATA_LIMIT]}\n</trigger_data>"
    return text


def rebuild(steps: Iterable[StepData], whole: Mapping[tuple[Any, str], str], context: Mapping[str, Any] | None) -> Conversation:
    """The conversation, from the steps alone (never from a previous worker's memory).

    ``steps`` in ``seq`` order; ``whole``: the full text of payload fields that were truncated in
    the row, by (step pk, field name)."""
    conv = Conversation()
    messages: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    calls_by_id: dict[str, PendingCall] = {}

    def flush_results() -> None:
        if results:
            messages.append({"role": "user", "content": list(results)})
            results.clear()

    for step in steps:
        p = step.payload
        if step.kind == StepKind.INPUT:
            conv.input_text = input_message(whole.get((step.pk, "text")) or p.get("text", ""), context)
            messages.append({"role": "user", "content": conv.input_text})
        elif step.kind == StepKind.MODEL_CALL:
            flush_results()
            # Only blocks the API accepts back (steps recorded before the checks may hold others).
            content = [b for b in p.get("content") or [] if isinstance(b, dict) and b.get("type") in ECHOABLE_BLOCKS]
            messages.append({"role": "assistant", "content": content or [{"type": "text", "text": p.get("text", "") or "(empty)"}]})
            note = p.get("controller_note")
            if note:
                messages.append({"role": "user", "content": note})
                conv.unusable_turns += 1
            else:
                conv.unusable_turns = 0
            conv.last_turn_text = p.get("text", "")
            conv.last_turn_calls = [PendingCall(c["id"], c["name"], c.get("arguments")) for c in p.get("tool_calls", [])]
            for call in conv.last_turn_calls:
                calls_by_id[call.id] = call
                conv.seen_call_ids.add(call.id)
            conv.last_turn_final = not conv.last_turn_calls and not note
        elif step.kind == StepKind.TOOL_CALL:
            conv.recorded_tool_calls.add(p.get("tool_call_id", ""))
            conv.tool_times.append(step.created_at.timestamp())
        elif step.kind == StepKind.OBSERVATION:
            text = p.get("output", "")
            if "output_truncated" in p:
                text = whole.get((step.pk, "output"), text)
            tool_use_id = p.get("tool_call_id", "")
            conv.observed.add(tool_use_id)
            is_error = bool(p.get("is_error"))
            results.append(tool_result_block(tool_use_id, text, is_error))
            ran = calls_by_id.get(tool_use_id)
            if ran is not None and isinstance(p.get("edited_arguments"), dict):
                # A person edited the call before approving it: the call that ran is the edited one.
                ran = PendingCall(ran.id, ran.name, p["edited_arguments"])
            conv.observations.append(
                Observation(
                    call=ran,
                    text=text,
                    is_error=is_error,
                    refused=p.get("refused"),
                    effect=bool(p.get("effect")),
                    counts_for_loops=bool(p.get("counts_for_loops", True)),
                    rejected=p.get("approval") == "rejected",
                )
            )
        elif step.kind == StepKind.GUARDRAIL and p.get("guard") == "loop_detector" and p.get("escalation") in ("nudge", "ask", "continue"):
            conv.observations.append(LoopMark(p["escalation"], dict(p.get("detection") or {})))
            if p["escalation"] == "nudge" and not p.get("tool_call_id") and p.get("note"):
                # A nudge before a model call is a message of its own (one at a tool call is that call's observation).
                flush_results()
                if messages and messages[-1]["role"] == "user" and isinstance(messages[-1]["content"], list):
                    messages[-1]["content"].append({"type": "text", "text": p["note"]})
                else:
                    messages.append({"role": "user", "content": [{"type": "text", "text": p["note"]}]})
        elif step.kind == StepKind.COMPACTION:
            flush_results()
            kept = int(p.get("kept_messages", 0))
            conv.summary = whole.get((step.pk, "summary")) or p.get("summary", "")
            messages = [{"role": "user", "content": conv.input_text + "\n\n" + conv.summary}] + (messages[-kept:] if kept else [])
    flush_results()
    conv.messages = messages
    return conv


@dataclass(frozen=True)
class Compaction:
    summary: str
    messages: list[dict[str, Any]]
    compacted_messages: int
    kept_messages: int


def compact(messages: list[dict[str, Any]], summary: str, input_text: str) -> Compaction | None:
    """Summarise all but the first message and the last exchange (an assistant turn and its results,
    kept verbatim); None when there is nothing older to summarise."""
    keep = messages[-2:] if len(messages) >= 4 else []
    older = messages[1 : len(messages) - len(keep)]
    if not older:
        return None
    lines = [summary] if summary else ["Summary of earlier work (older turns were compacted by the controller):"]
    for message in older:
        content = message["content"]
        if isinstance(content, str):
            lines.append(f"- {message['role']}: {content[:300]}")
            continue
        for block in content:
            if block.get("type") == "text":
                lines.append(f"- you said: {block['text'][:300]}")
            elif block.get("type") == "tool_use":
                lines.append(f"- you called {block['name']} with {str(block.get('input'))[:200]}")
            elif block.get("type") == "tool_result":
                lines.append(f"  result{' (error)' if block.get('is_error') else ''}: {str(block.get('content'))[:300]}")
    # The newest lines matter most when the summary itself grows too long.
    new_summary = "\n".join(lines)[-SUMMARY_LIMIT:]
    return Compaction(
        summary=new_summary,
        messages=[{"role": "user", "content": input_text + "\n\n" + new_summary}] + keep,
        compacted_messages=len(older),
        kept_messages=len(keep),
    )
