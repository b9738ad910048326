"""The three stream stages: tweets → sentiment → stake."""
