"""HTTP gateway: authenticated Tao dividends with a two-level cache and the trade trigger."""
