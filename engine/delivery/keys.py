"""Delivery's Redis keys: defined in ``engine/keys.py`` (every key is built there)."""

from __future__ import annotations

from engine.keys import DeliveryKeys, member, split_member

__all__ = ["DeliveryKeys", "member", "split_member"]
