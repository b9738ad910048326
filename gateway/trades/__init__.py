"""Trades: enqueueing them (trigger), the trade fields of answers (presenter), their path
through the stages and stake action history (service), and the routes."""
