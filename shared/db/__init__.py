"""Database models, configuration and migrations (Tortoise ORM)."""
