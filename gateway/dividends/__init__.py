"""GET /api/v1/tao_dividends."""
