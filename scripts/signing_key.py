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
import stat
import sys
from pathlib import Path
from typing import Literal

from shared.settings import Settings
from shared.signing import MIN_KEY_CHARS

KEY_FILE = Path(__file__).resolve().parents[1] / "data" / "event_signing_key"
Origin = Literal["configured", "created", "reused"]


def ensure_signing_key(settings: Settings, path: Path = KEY_FILE) -> tuple[str, Origin]:
    """The key to run with and where it came from; creates `path` on first use only.

    A kept key is reused only from a regular file owned by the current user and readable by
    no one else (a key others can read could sign trades); otherwise this stops with the
    reason. A `./data` it creates is made private (0700).
    """
    configured = settings.event_signing_key
    if configured is not None and configured.get_secret_value().strip():
        return configured.get_secret_value().strip(), "configured"
    try:
        path.parent.mkdir(parents=True, mode=0o700)
    except FileExistsError:
        pass
    else:
        os.chmod(path.parent, 0o700)  # mkdir's mode is filtered by the umask
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _reuse(path), "reused"
    key = secrets.token_hex(32)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key, "created"


def _reuse(path: Path) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise SystemExit(f"{path} cannot be read as a key file ({exc.strerror})") from None
    with os.fdopen(fd) as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise SystemExit(f"{path} is not a regular file: not used as the signing key")
        if info.st_uid != os.getuid():
            raise SystemExit(
                f"{path} is owned by uid {info.st_uid}, not by you (uid {os.getuid()}): "
                "not used as the signing key; delete it to have a new one made"
            )
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise SystemExit(
                f"{path} is readable or writable by others (mode {mode:04o}): not used as the "
                f"signing key; run `chmod 600 {path}` if it is yours, else delete it"
            )
        key = handle.read().strip()
    if len(key) < MIN_KEY_CHARS:
        raise SystemExit(f"{path} holds no usable key: delete it to have a new one made")
    return key


def main() -> None:
    key, _ = ensure_signing_key(Settings())
    sys.stdout.write(key)


if __name__ == "__main__":
    main()
