"""Ingest under the server the README deploys: daphne + PostgreSQL, concurrent clients (slow).

Runs one small repetition of benchmarks/bench_ingest.py and asserts what must always hold, not a
rate (shared CI machines vary): every post answered 200, each group counts exactly its unique
events (resends deduplicated), exactly one run per error group, and no traceback in daphne's log.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_ingest.py"


def test_concurrent_clients_under_daphne_get_one_run_per_group_and_exact_counts(require_real):
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        require_real("postgresql", "DATABASE_URL is not a PostgreSQL URL")
    spec = importlib.util.spec_from_file_location("bench_ingest", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.one_repetition(url, argparse.Namespace(clients=10, posts=40, groups=5, envelope=True))
    assert result["problems"] == []
    assert result["groups"] == 6 and result["runs"] == 6  # 5 groups + the warm-up event's
    assert result["posts"] == 400
