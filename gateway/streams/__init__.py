"""The stream pipeline's backlog, read-only: lengths, group lag, pending entries, dead letters."""
