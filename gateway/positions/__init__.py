"""Stake held per (netuid, hotkey): from the stored stake actions, and from the chain."""
