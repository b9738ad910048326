"""Runtimes are found by file name: the node serves a recorded spec of any number."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from shared.chain import DividendEntry, SubtensorChain
from tests.devchain import FIXTURES_HINT, DevChain, FixturesNotFound, fixtures_dir
from tests.devchain.__main__ import main as devchain_main
from tests.devchain.fixtures import load_blobs, metadata_dir, recorded_specs
from tests.devchain.seed import DEMO_HOTKEY

os.environ["BT_MEV_PROTECTION"] = "0"  # before bittensor is imported

KIT = fixtures_dir()
needs_kit = pytest.mark.skipif(KIT is None, reason=FIXTURES_HINT)
RAO = 10**9


@pytest.fixture
def spec4242(tmp_path: Path) -> Path:
    """The kit's spec 393 runtime recorded under another spec number (V15 file only)."""
    assert KIT is not None
    directory = tmp_path / "recorded"
    directory.mkdir()
    shutil.copy(
        KIT / "spec393_v15_metadata_at_version.hex",
        directory / "spec4242_v15_metadata_at_version.hex",
    )
    return directory


def test_specs_are_discovered_from_v15_file_names(tmp_path: Path) -> None:
    for name in (
        "spec500_v15_metadata_at_version.hex",
        "spec77_v15_metadata_at_version.hex",
        "spec600_v14_state_getMetadata.hex",  # no V15 answer: not a usable runtime
        ".spec700_v15_metadata_at_version.hex.abc.tmp",  # a recording in progress
        "spec800_recorded.json",
        "README.md",
    ):
        (tmp_path / name).write_text("0x00")
    (tmp_path / "spec900_v15_metadata_at_version.hex").mkdir()
    assert recorded_specs(tmp_path) == (77, 500)
    assert recorded_specs(tmp_path / "missing") == ()


def test_the_kit_dir_is_strict_and_the_metadata_dir_is_not(
    spec4242: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHAIN_FIXTURES_DIR", str(spec4242))
    assert fixtures_dir() is None  # the tests need the kit's 315 and 393
    assert metadata_dir() == spec4242  # the node can serve what is there
    monkeypatch.setenv("CHAIN_FIXTURES_DIR", str(spec4242 / "missing"))
    assert metadata_dir() is None


@needs_kit
def test_load_blobs_names_the_missing_file_and_what_is_recorded(spec4242: Path) -> None:
    with pytest.raises(FixturesNotFound, match=r"no spec393_v15_.*recorded specs: 4242"):
        load_blobs(393, directory=spec4242)
    blobs = load_blobs(4242, directory=spec4242)
    assert blobs.spec == 4242 and blobs.raw == blobs.v15 and blobs.raw.startswith(b"meta\x0f")


@needs_kit
def test_a_state_get_metadata_file_is_used_when_recorded(tmp_path: Path) -> None:
    assert KIT is not None
    for name in ("spec315_v15_metadata_at_version.hex", "spec315_v14_state_getMetadata.hex"):
        shutil.copy(KIT / name, tmp_path / name.replace("315", "316"))
    blobs = load_blobs(316, directory=tmp_path)
    assert blobs.raw[:5] == b"meta\x0e" and blobs.v15[:5] == b"meta\x0f"


@needs_kit
async def test_the_sdk_reads_and_stakes_on_a_spec_of_another_number(
    spec4242: Path, tmp_path: Path
) -> None:
    from tests.shared.chain.test_staking_devchain import (
        make_unencrypted_wallet,
        protected,
        stake_client,
        staker_settings,
    )

    coldkey = make_unencrypted_wallet(tmp_path / "wallets")
    async with DevChain(spec=4242, fixtures_dir=spec4242) as node:
        assert node.dividend_storage == "RootAlphaDividendsPerSubnet"  # read from the metadata
        node.add_subnet(18, price_tao=0.5)
        node.set_dividend(18, DEMO_HOTKEY, 42)
        node.fund(coldkey, 10)
        settings = staker_settings(node.url, tmp_path / "wallets", dividends_storage="auto")
        chain = SubtensorChain(settings)
        await chain.start()
        try:
            snapshot = await chain.dividend(18, DEMO_HOTKEY)
        finally:
            await chain.close()
        # Signing covers the spec version (CheckSpecVersion): the node checks it is 4242.
        async with stake_client(settings) as staker:
            _, outcome = await protected(staker, "add", 18, RAO)

    assert snapshot.entries == [DividendEntry(18, DEMO_HOTKEY, 42)]
    assert snapshot.storage == "RootAlphaDividendsPerSubnet"
    assert outcome.success, outcome.message
    assert node.stake(coldkey, DEMO_HOTKEY, 18) == 2 * RAO


@needs_kit
def test_the_cli_serves_the_highest_spec_and_names_what_is_missing(
    spec4242: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert devchain_main(["--fixtures", str(spec4242), "--spec", "393", "--port", "0"]) == 2
    assert "spec 393 is not recorded in" in capsys.readouterr().err
    assert devchain_main(["--fixtures", str(tmp_path / "empty"), "--port", "0"]) == 2
    assert "no spec<N>_v15_metadata_at_version.hex in" in capsys.readouterr().err


@needs_kit
def test_the_cli_says_which_runtime_it_cannot_simulate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A runtime without an item the node models fails with a message, not a traceback."""
    assert KIT is not None
    # spec 393's metadata with SubtensorModule.NetworksAdded renamed (same length).
    blob = (KIT / "spec393_v15_metadata_at_version.hex").read_text()
    old, new = b"NetworksAdded".hex(), b"NetworksAdder".hex()
    assert blob.count(old) == 1
    (tmp_path / "spec999_v15_metadata_at_version.hex").write_text(blob.replace(old, new))
    assert devchain_main(["--fixtures", str(tmp_path), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert f"runtime spec 999 from {tmp_path} cannot be simulated" in err
    assert "NetworksAdded" in err
