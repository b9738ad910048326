"""The read-only operator console: one page and its script and style, served as files."""
