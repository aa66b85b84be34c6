"""The spend chart's colours: assigned by the spend view, and turned into a c-<n> class by the
palette_index filter (the Content-Security-Policy allows no inline style). A module of its own so
the template tags need not import the views."""

from __future__ import annotations

PALETTE = ["#2f6fdf", "#e07b39", "#2ea44f", "#a855f7", "#d33f49", "#0ea5a4", "#b8860b", "#6b7280"]
