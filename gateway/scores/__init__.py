"""Sentiment score history per subnet."""
