"""Run as a script against the soak test's database: streams steps into a run through the
product's write path (step_record -> on_commit -> channel layer), in bursts separated by quiet
gaps longer than the 6 s after which websockets used to die, for a given duration."""

from __future__ import annotations

import json
import sys
import time

from browser_seed import StepKind, step_record  # noqa: E402  (sets Django up)

from agentops import live  # noqa: E402


def stream(run_id: int, duration_s: float, quiet_s: float) -> dict:
    seqs: list[int] = []
    started = time.monotonic()
    cycle = 0
    while time.monotonic() - started < duration_s:
        # Alternate a slow trickle with a fast burst: the page sees both idle and load.
        count, delay = (3, 0.3) if cycle % 2 == 0 else (25, 0.02)
        for i in range(count):
            step = step_record(
                run=run_id,
                kind=StepKind.MODEL_CALL if i % 2 == 0 else StepKind.TOOL_CALL,
                payload={"text": f"soak cycle {cycle} step {i}"} if i % 2 == 0 else {"tool": "run_tests", "arguments": {"command": "pytest -q"}},
                model_id="claude-sonnet-4-5",
                input_tokens=100,
                output_tokens=10,
            )
            seqs.append(step.seq)
            time.sleep(delay)
        cycle += 1
        time.sleep(min(quiet_s, max(0.0, duration_s - (time.monotonic() - started))))
    live.flush(5)
    return {"seqs": seqs, "cycles": cycle}


if __name__ == "__main__":
    print(json.dumps(stream(int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]))), flush=True)
