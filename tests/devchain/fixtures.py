"""Where the recorded runtime metadata lives, and reading it.

The blobs stay in the reference kit beside the checkout (`../shared/chain-fixtures`),
in the directory named by `CHAIN_FIXTURES_DIR`, or in a directory `scripts/record_metadata.py`
recorded from a live node (`make demo` uses `./data/chain-fixtures`); they are never copied
into the repository. Callers that cannot run without them (tests, the CLI) check
`fixtures_dir()` first and skip or exit with `FIXTURES_HINT`.

A directory holds any number of runtimes, found by file name (the kit's format: each file
is the exact JSON-RPC `result` string, `0x` hex, no newline):

- `spec{N}_v15_metadata_at_version.hex`: `state_call Metadata_metadata_at_version 0x0f000000`
  (SCALE `Option<OpaqueMetadata>`); required, it is what makes spec N known;
- `spec{N}_v{V}_state_getMetadata.hex`: `state_getMetadata` (metadata version V, 14 on a
  real node); optional, without it `state_getMetadata` answers the V15 metadata.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

ENV_VAR = "CHAIN_FIXTURES_DIR"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DIR = REPO_ROOT.parent / "shared" / "chain-fixtures"
FIXTURES_HINT = (
    f"no chain fixtures: set {ENV_VAR} or provide {DEFAULT_DIR} "
    "(recorded Subtensor metadata, see ../shared/chain-fixtures/README.md)"
)

# The reference kit's runtimes, which the tests are written against.
SPECS = (315, 393)
V15_FILE = "spec{spec}_v15_metadata_at_version.hex"
METADATA_FILE = "spec{spec}_v{version}_state_getMetadata.hex"
_V15_RE = re.compile(r"^spec(\d+)_v15_metadata_at_version\.hex$")
_METADATA_RE = re.compile(r"^spec(\d+)_v(\d+)_state_getMetadata\.hex$")

# `Balances.ExistentialDeposit` is a metadata constant, not storage. Its encoding in the
# pallet's constant list: SCALE string name, compact type id (u64 = 6 -> 0x18), then the
# value as Vec<u8> of length 8 (0x20). Patching those 8 bytes changes nothing else.
_ED_MARKER = b"\x48ExistentialDeposit\x18\x20"


class FixturesNotFound(RuntimeError):
    """The recorded metadata is not available on this machine."""


@dataclass(frozen=True, slots=True)
class MetadataBlobs:
    spec: int
    v15_option: bytes
    """SCALE `Option<OpaqueMetadata>`: the exact `Metadata_metadata_at_version(15)` answer."""
    raw: bytes
    """Plain metadata bytes (`meta` magic + version): the `state_getMetadata` answer."""

    @property
    def v15(self) -> bytes:
        return _strip_option_vec(self.v15_option)


def recorded_specs(directory: Path) -> tuple[int, ...]:
    """The runtimes recorded in a directory (those with a V15 file), ascending."""
    if not directory.is_dir():
        return ()
    found = (_V15_RE.match(entry.name) for entry in directory.iterdir() if entry.is_file())
    return tuple(sorted(int(match.group(1)) for match in found if match))


def metadata_dir() -> Path | None:
    """Where `DevChain` reads by default: `CHAIN_FIXTURES_DIR` (any recorded runtime) or the
    kit beside the checkout; None when that directory has no runtime at all."""
    configured = os.environ.get(ENV_VAR)
    path = Path(configured) if configured else DEFAULT_DIR
    return path if recorded_specs(path) else None


def fixtures_dir() -> Path | None:
    """The kit's directory (both `SPECS` present), or None when this machine lacks it."""
    path = metadata_dir()
    if path is None or not set(SPECS) <= set(recorded_specs(path)):
        return None
    return path


def _read_hex(path: Path) -> bytes:
    text = path.read_text().strip()
    return bytes.fromhex(text.removeprefix("0x"))


def _strip_option_vec(data: bytes) -> bytes:
    """Unwrap `Some(Vec<u8>)`: drop the option byte and the compact length."""
    if not data or data[0] != 1:
        raise ValueError("metadata blob is not Some(..)")
    body = data[1:]
    mode = body[0] & 0b11
    if mode == 0:
        return body[1 : 1 + (body[0] >> 2)]
    if mode == 1:
        return body[2 : 2 + (int.from_bytes(body[:2], "little") >> 2)]
    if mode == 2:
        return body[4 : 4 + (int.from_bytes(body[:4], "little") >> 2)]
    size = (body[0] >> 2) + 4
    return body[1 + size : 1 + size + int.from_bytes(body[1 : 1 + size], "little")]


def _patch_ed(blob: bytes, existential_deposit: int) -> bytes:
    at = blob.find(_ED_MARKER)
    if at < 0 or blob.find(_ED_MARKER, at + 1) >= 0:
        raise ValueError("Balances.ExistentialDeposit not found exactly once in metadata")
    start = at + len(_ED_MARKER)
    return blob[:start] + existential_deposit.to_bytes(8, "little") + blob[start + 8 :]


def _metadata_file(directory: Path, spec: int) -> Path | None:
    """spec N's `state_getMetadata` answer; the lowest metadata version when several."""
    found = sorted(
        (int(match.group(2)), entry)
        for entry in directory.iterdir()
        if (match := _METADATA_RE.match(entry.name)) and int(match.group(1)) == spec
    )
    return found[0][1] if found else None


def load_blobs(
    spec: int, *, directory: Path | None = None, existential_deposit: int | None = None
) -> MetadataBlobs:
    """Read one runtime's metadata, optionally with a different existential deposit."""
    directory = directory or metadata_dir()
    if directory is None:
        raise FixturesNotFound(FIXTURES_HINT)
    v15_path = directory / V15_FILE.format(spec=spec)
    if not v15_path.is_file():
        recorded = ", ".join(map(str, recorded_specs(directory))) or "none"
        raise FixturesNotFound(f"no {v15_path.name} in {directory} (recorded specs: {recorded})")
    v15_option = _read_hex(v15_path)
    metadata_path = _metadata_file(directory, spec)
    raw = _read_hex(metadata_path) if metadata_path else _strip_option_vec(v15_option)
    if not raw.startswith(b"meta"):
        raise ValueError(f"{metadata_path or v15_path} does not hold runtime metadata")
    if existential_deposit is not None:
        v15_option = _patch_ed(v15_option, existential_deposit)
        raw = _patch_ed(raw, existential_deposit)
    return MetadataBlobs(spec=spec, v15_option=v15_option, raw=raw)
