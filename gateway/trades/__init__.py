"""Trades: their path through the stages, stake action history, manual triggers."""
