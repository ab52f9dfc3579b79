"""Helpers shared by several test modules (real servers on loopback)."""
