"""Settings for the test suite: the product's settings in development mode (no SECRET_KEY needed)."""

import os

os.environ.setdefault("DEBUG", "1")
# This session's sandboxes (and those of the workers it starts) are its own: a reaper or kill switch
# of another test session on the same machine never touches them.
os.environ.setdefault("AGENTOPS_SANDBOX_SCOPE", f"test-{os.getpid()}")

from agentops.settings import *  # noqa: E402,F403

# One test database per test session, so two sessions on one machine never drop each other's.
if DATABASES["default"]["ENGINE"].endswith("postgresql"):  # noqa: F405
    DATABASES["default"]["TEST"] = {"NAME": f"test_agentops_{os.getpid()}"}  # noqa: F405

# In-process runs execute inside the test's transaction, which the heartbeat thread's own connection
# cannot see: its renewal would find no row and the run would stop as "lease lost". Tests of leases
# run workers in subprocesses with their own (short) settings, given in their environment (those
# workers import this module too: pytest-django exports DJANGO_SETTINGS_MODULE).
if not {"AGENTOPS_HEARTBEAT_S", "AGENTOPS_LEASE_TTL_S"} & set(os.environ):
    AGENTOPS_HEARTBEAT_S = 600
    AGENTOPS_LEASE_TTL_S = 1200
