"""Watus: the software brain of a robot that hears, sees and talks.

This package holds what every process shares (settings base, logging, metrics, timing spans and the
turn header), the agent and the `watus` CLI.
"""

__version__ = "0.1.0"
