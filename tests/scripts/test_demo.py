"""Where `make demo` finds the runtime metadata, and what it says when there is none."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from scripts import demo, record_metadata
from tests.devchain import FIXTURES_HINT, fixtures_dir, free_port
from tests.scripts.conftest import ROOT, devchain_process

KIT = fixtures_dir()
needs_kit = pytest.mark.skipif(KIT is None, reason=FIXTURES_HINT)


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """./data/chain-fixtures and the kit beside the checkout, both empty, in tmp_path."""
    recorded = tmp_path / "data" / "chain-fixtures"
    kit = tmp_path / "shared" / "chain-fixtures"
    monkeypatch.setattr(demo, "RECORDED_DIR", recorded)
    monkeypatch.setattr(demo, "KIT_DIR", kit)
    monkeypatch.delenv("CHAIN_FIXTURES_DIR", raising=False)
    return {"recorded": recorded, "kit": kit, "wallet": tmp_path / "wallet"}


def copy_spec(source: Path, target: Path, spec: int, as_spec: int | None = None) -> None:
    target.mkdir(parents=True, exist_ok=True)
    name = f"spec{spec}_v15_metadata_at_version.hex"
    shutil.copy(source / name, target / name.replace(str(spec), str(as_spec or spec), 1))


def test_offline_without_fixtures_says_what_is_missing_and_exits_2(
    places: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"ws://127.0.0.1:{free_port()}"
    monkeypatch.setenv("BITTENSOR_NETWORK", url)

    code = demo.main(["--port", str(free_port()), "--wallet-path", str(places["wallet"])])

    out = capsys.readouterr().out
    assert code == 2
    # What it looked for, and where.
    assert "spec<N>_v15_metadata_at_version.hex" in out
    assert "CHAIN_FIXTURES_DIR: not set" in out
    assert f"{places['recorded']}: no such directory" in out
    assert f"{places['kit']}: no such directory" in out
    # Which network it tried, and the error.
    assert f"Tried to record it from BITTENSOR_NETWORK={url}:" in out
    assert "ConnectionRefusedError" in out
    # The two ways to fix it.
    assert "1. with internet access" in out and "run `make demo` again" in out
    assert "2. or set CHAIN_FIXTURES_DIR to a directory holding" in out
    # Nothing was created on the way.
    assert not places["recorded"].exists() and not places["wallet"].exists()


def test_a_network_name_is_shown_with_its_endpoint(
    places: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    unreachable = f"ws://127.0.0.1:{free_port()}"  # not 9944: a real demo may run there
    monkeypatch.setattr(demo, "resolve_network", lambda name: unreachable)
    monkeypatch.setattr(record_metadata, "resolve_network", lambda name: unreachable)
    with pytest.raises(demo.MetadataMissing) as missing:
        demo.find_metadata(None, "local")
    assert f"BITTENSOR_NETWORK=local ({unreachable}):" in str(missing.value)


def test_chain_fixtures_dir_wins_and_nothing_else_is_tried(
    places: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    empty = tmp_path / "configured"
    empty.mkdir()
    monkeypatch.setenv("CHAIN_FIXTURES_DIR", str(empty))
    places["recorded"].mkdir(parents=True)
    (places["recorded"] / "spec400_v15_metadata_at_version.hex").write_text("0x01")

    with pytest.raises(demo.MetadataMissing) as missing:
        demo.find_metadata(None, "ws://127.0.0.1:1")
    assert f"CHAIN_FIXTURES_DIR={empty} has no spec<N>_v15_metadata_at_version.hex" in str(
        missing.value
    )
    assert "recording" not in capsys.readouterr().out

    (empty / "spec401_v15_metadata_at_version.hex").write_text("0x01")
    found = demo.find_metadata(None, "ws://127.0.0.1:1")
    assert (found.directory, found.spec) == (empty.resolve(), 401)
    with pytest.raises(demo.MetadataMissing, match=r"no spec400_v15_metadata_at_version\.hex"):
        demo.find_metadata(400, "ws://127.0.0.1:1")


def test_an_earlier_recording_is_reused_before_the_kit_and_the_network(
    places: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    for directory in (places["recorded"], places["kit"]):
        directory.mkdir(parents=True)
    (places["kit"] / "spec393_v15_metadata_at_version.hex").write_text("0x01")
    found = demo.find_metadata(None, "ws://127.0.0.1:1")
    assert (found.directory, found.spec) == (places["kit"], 393)

    for spec in (410, 402):
        (places["recorded"] / f"spec{spec}_v15_metadata_at_version.hex").write_text("0x01")
    found = demo.find_metadata(None, "ws://127.0.0.1:1")
    assert (found.directory, found.spec) == (places["recorded"], 410)  # the highest
    found = demo.find_metadata(393, "ws://127.0.0.1:1")
    assert (found.directory, found.spec) == (places["kit"], 393)
    assert "recording" not in capsys.readouterr().out


@needs_kit
def test_without_metadata_it_records_once_then_reuses(
    places: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert KIT is not None
    with devchain_process("--spec", "393", "--fixtures", str(KIT)) as url:
        found = demo.find_metadata(None, url)
        assert f"recording it once from BITTENSOR_NETWORK={url}" in capsys.readouterr().out
        assert (found.directory, found.spec) == (places["recorded"], 393)
        name = "spec393_v15_metadata_at_version.hex"
        assert (places["recorded"] / name).read_bytes() == (KIT / name).read_bytes()
        with pytest.raises(demo.MetadataMissing, match="runs spec 393"):
            demo.find_metadata(315, url)  # not recorded anywhere; the node runs 393
        capsys.readouterr()
    again = demo.find_metadata(None, url)  # the node is gone: no network needed
    assert (again.directory, again.spec) == (places["recorded"], 393)
    assert f"recorded earlier into {places['recorded']} from {url} at " in again.origin
    assert "recording" not in capsys.readouterr().out


def test_make_bench_without_wrk_says_how_to_install_it_and_skips(tmp_path: Path) -> None:
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    done = subprocess.run(
        [make, "-s", "-o", "install", "bench-gateway"],
        cwd=ROOT,
        env={"PATH": str(tmp_path), "HOME": str(tmp_path)},  # no wrk on this PATH
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "wrk is not installed" in done.stdout
    assert "apt-get install -y wrk" in done.stdout and "brew install wrk" in done.stdout
    assert "skipped" in done.stdout
