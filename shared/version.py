"""The project's version, for `--version`: pyproject.toml's `[project] version` is the one source.

Read from the installed distribution's metadata when the project is installed, else from
pyproject.toml beside the packages (a checkout); "unknown" where neither exists.
"""

from __future__ import annotations

import tomllib
from functools import lru_cache
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "taostake"
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


@lru_cache(maxsize=1)
def project_version() -> str:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        pass
    try:
        with PYPROJECT.open("rb") as file:
            return str(tomllib.load(file)["project"]["version"])
    except (OSError, KeyError, TypeError, tomllib.TOMLDecodeError):
        return "unknown"
