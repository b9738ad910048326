"""Where the recorded runtime metadata lives, and reading it.

The blobs stay in the reference kit beside the checkout (`../shared/chain-fixtures`)
or in the directory named by `CHAIN_FIXTURES_DIR`; they are never copied into the
repository. Callers that cannot run without them (tests, the CLI) check
`fixtures_dir()` first and skip or exit with `FIXTURES_HINT`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENV_VAR = "CHAIN_FIXTURES_DIR"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DIR = REPO_ROOT.parent / "shared" / "chain-fixtures"
FIXTURES_HINT = (
    f"no chain fixtures: set {ENV_VAR} or provide {DEFAULT_DIR} "
    "(recorded Subtensor metadata, see ../shared/chain-fixtures/README.md)"
)

# spec_version -> (V15 `Metadata_metadata_at_version` answer, V14 `state_getMetadata` answer)
FILES: dict[int, tuple[str, str | None]] = {
    315: ("spec315_v15_metadata_at_version.hex", "spec315_v14_state_getMetadata.hex"),
    393: ("spec393_v15_metadata_at_version.hex", None),
}
SPECS = tuple(sorted(FILES))

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


def fixtures_dir() -> Path | None:
    """The fixtures directory, or None when this machine lacks it."""
    configured = os.environ.get(ENV_VAR)
    path = Path(configured) if configured else DEFAULT_DIR
    if not path.is_dir():
        return None
    if not all((path / v15).is_file() for v15, _ in FILES.values()):
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


def load_blobs(
    spec: int, *, directory: Path | None = None, existential_deposit: int | None = None
) -> MetadataBlobs:
    """Read one runtime's metadata, optionally with a different existential deposit."""
    if spec not in FILES:
        raise ValueError(f"unknown spec {spec}; recorded: {', '.join(map(str, SPECS))}")
    directory = directory or fixtures_dir()
    if directory is None:
        raise FixturesNotFound(FIXTURES_HINT)
    v15_name, v14_name = FILES[spec]
    v15_option = _read_hex(directory / v15_name)
    raw = _read_hex(directory / v14_name) if v14_name else _strip_option_vec(v15_option)
    if existential_deposit is not None:
        v15_option = _patch_ed(v15_option, existential_deposit)
        raw = _patch_ed(raw, existential_deposit)
    return MetadataBlobs(spec=spec, v15_option=v15_option, raw=raw)
