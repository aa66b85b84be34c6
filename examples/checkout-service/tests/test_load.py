import threading

from checkout import db
from checkout.service import checkout

CONCURRENT_CHECKOUTS = 25


def test_checkout_survives_a_burst_of_concurrent_orders():
    db.reset_pool()
    barrier = threading.Barrier(CONCURRENT_CHECKOUTS)
    errors = []

    def one_customer():
        try:
            barrier.wait(timeout=10)
            checkout({"book": 1})
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=one_customer) for _ in range(CONCURRENT_CHECKOUTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [], f"{len(errors)} of {CONCURRENT_CHECKOUTS} checkouts failed: {errors[0]!r}"
