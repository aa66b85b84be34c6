"""The checkout flow: price the cart, record the order."""

from __future__ import annotations

from checkout.db import get_pool

PRICES = {"book": 1200, "pen": 150, "mug": 800}  # cents


class UnknownProductError(ValueError):
    pass


def cart_total(cart: dict[str, int]) -> int:
    total = 0
    for sku, quantity in cart.items():
        if sku not in PRICES:
            raise UnknownProductError(sku)
        if quantity < 1:
            raise ValueError(f"quantity of {sku} must be at least 1")
        total += PRICES[sku] * quantity
    return total


def checkout(cart: dict[str, int]) -> dict[str, object]:
    total = cart_total(cart)
    with get_pool().connection() as conn:
        conn.execute("INSERT INTO orders (total) VALUES (%s)", total)
    return {"status": "ok", "total": total}
