import pytest
from checkout import db
from checkout.service import UnknownProductError, cart_total, checkout


def test_cart_total_adds_prices_times_quantities():
    assert cart_total({"book": 2, "pen": 1}) == 2550


def test_unknown_products_are_refused():
    with pytest.raises(UnknownProductError):
        cart_total({"sword": 1})


def test_quantities_must_be_positive():
    with pytest.raises(ValueError):
        cart_total({"book": 0})


def test_checkout_records_the_order():
    db.reset_pool()
    result = checkout({"mug": 1})
    assert result == {"status": "ok", "total": 800}


def test_connections_go_back_to_the_pool():
    pool = db.ConnectionPool(size=2)
    with pool.connection() as first:
        assert first.number in (0, 1)
    with pool.connection() as again:
        assert again is first
