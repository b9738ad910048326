"""The trade pipeline: stage workers on Redis Streams, outside-API clients, sentiment scoring."""
