"""Reproduce the production incident and report it with the real sentry-sdk.

    python3 send_error.py http://<key>@127.0.0.1:8000/<project id> [--customers 25]

Runs a burst of concurrent checkouts against the service; every ConnectionPoolExhaustedError is
reported to the DSN exactly as a production app instrumented with sentry-sdk would.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import sentry_sdk  # noqa: E402
from checkout import db  # noqa: E402
from checkout.service import checkout  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dsn")
    parser.add_argument("--customers", type=int, default=25)
    parser.add_argument("--environment", default="production")
    args = parser.parse_args()

    sentry_sdk.init(dsn=args.dsn, environment=args.environment, release="checkout-service@1.4.2", default_integrations=False)
    # The global scope: the failing checkouts report from their own threads.
    sentry_sdk.get_global_scope().set_tag("service", "checkout")
    db.reset_pool()
    barrier = threading.Barrier(args.customers)
    failures: list[BaseException] = []

    def customer() -> None:
        barrier.wait()
        try:
            checkout({"book": 1, "pen": 2})
        except db.ConnectionPoolExhaustedError as exc:
            failures.append(exc)
            sentry_sdk.capture_exception(exc)

    threads = [threading.Thread(target=customer, name=f"customer-{n}") for n in range(args.customers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sentry_sdk.flush(timeout=15)
    print(f"{args.customers} concurrent checkouts: {len(failures)} failed with ConnectionPoolExhaustedError (reported to {args.dsn.split('@')[-1]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
