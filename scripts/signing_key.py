"""The EVENT_SIGNING_KEY for `make run`: the configured one, else one kept in ./data.

`make run` starts the gateway, the pipeline and beat together; they must share one key,
and a newcomer should not have to make one up. When EVENT_SIGNING_KEY is unset (neither
in the environment nor in .env) a random key is written once to ./data/event_signing_key
(mode 0600) and reused on every later run. `python scripts/signing_key.py` prints the key
for the Makefile to export; nothing else should print it.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path
from typing import Literal

from shared.settings import Settings
from shared.signing import MIN_KEY_CHARS

KEY_FILE = Path(__file__).resolve().parents[1] / "data" / "event_signing_key"
Origin = Literal["configured", "created", "reused"]


def ensure_signing_key(settings: Settings, path: Path = KEY_FILE) -> tuple[str, Origin]:
    """The key to run with and where it came from; creates `path` on first use only."""
    configured = settings.event_signing_key
    if configured is not None and configured.get_secret_value().strip():
        return configured.get_secret_value().strip(), "configured"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_text().strip()
        if len(key) < MIN_KEY_CHARS:
            raise SystemExit(
                f"{path} holds no usable key: delete it to have a new one made"
            ) from None
        return key, "reused"
    key = secrets.token_hex(32)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key, "created"


def main() -> None:
    key, _ = ensure_signing_key(Settings())
    sys.stdout.write(key)


if __name__ == "__main__":
    main()
