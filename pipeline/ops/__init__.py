"""Operator tools: stream inspection, replay and dead-letter handling."""
