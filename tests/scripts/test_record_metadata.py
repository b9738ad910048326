"""scripts/record_metadata.py against the simulated node: the kit's blobs, byte for byte."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from websockets.sync.client import connect

from scripts import record_metadata
from scripts.record_metadata import RecordError, check_answers, record, write_atomically
from tests.devchain import FIXTURES_HINT, fixtures_dir, free_port
from tests.devchain.fixtures import recorded_specs
from tests.scripts.conftest import ROOT, devchain_process

KIT = fixtures_dir()
needs_kit = pytest.mark.skipif(KIT is None, reason=FIXTURES_HINT)


def rpc(url: str, method: str, *params: object) -> object:
    with connect(url, max_size=None, open_timeout=10) as ws:
        ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
        reply = json.loads(ws.recv(timeout=10))
    return reply["result"]


def run_recorder(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "scripts/record_metadata.py", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


@needs_kit
@pytest.mark.parametrize(
    ("spec", "metadata_file"),
    [
        # 393: the kit has no state_getMetadata answer, so the node answers the V15 metadata.
        (393, "spec393_v15_state_getMetadata.hex"),
        (315, "spec315_v14_state_getMetadata.hex"),  # the kit's own file name
    ],
)
def test_records_what_the_node_serves_and_a_node_serves_the_recording(
    tmp_path: Path, spec: int, metadata_file: str
) -> None:
    assert KIT is not None
    out = tmp_path / "data" / "chain-fixtures"
    v15_file = f"spec{spec}_v15_metadata_at_version.hex"
    with devchain_process("--spec", str(spec)) as url:
        done = run_recorder("--network", url, "--out", str(out), "--timeout", "20")
        assert done.returncode == 0, done.stderr
        served_metadata = rpc(url, "state_getMetadata")
    assert f"recorded runtime spec {spec} from {url}" in done.stdout

    names = sorted(path.name for path in out.iterdir())
    assert names == sorted([v15_file, metadata_file, f"spec{spec}_recorded.json"])
    assert (out / v15_file).read_bytes() == (KIT / v15_file).read_bytes()
    if (KIT / metadata_file).exists():
        assert (out / metadata_file).read_bytes() == (KIT / metadata_file).read_bytes()
    assert (out / metadata_file).read_text() == served_metadata
    info = json.loads((out / f"spec{spec}_recorded.json").read_text())
    assert info["runtime_version"]["specVersion"] == spec and info["endpoint"] == url
    assert recorded_specs(out) == (spec,)

    # A node started from the recorded directory alone (no --spec) serves that runtime.
    with devchain_process("--fixtures", str(out), "--seed-demo") as url:
        version = rpc(url, "state_getRuntimeVersion")
        v15 = rpc(url, "state_call", "Metadata_metadata_at_version", "0x0f000000")
        metadata = rpc(url, "state_getMetadata")
    assert isinstance(version, dict) and version["specVersion"] == spec
    assert v15 == (KIT / v15_file).read_text()
    assert metadata == served_metadata


@needs_kit
def test_a_spec_of_another_number_is_recorded_under_that_number(tmp_path: Path) -> None:
    """The node reports spec 4242 (the 393 runtime renamed): every file is keyed by it."""
    assert KIT is not None
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    blob = (KIT / "spec393_v15_metadata_at_version.hex").read_text()
    (renamed / "spec4242_v15_metadata_at_version.hex").write_text(blob)
    out = tmp_path / "out"
    with devchain_process("--fixtures", str(renamed)) as url:
        done = record(url, out, timeout_s=20)
    assert done.spec == 4242 and recorded_specs(out) == (4242,)
    assert (out / "spec4242_v15_metadata_at_version.hex").read_text() == blob
    assert (out / "spec4242_v15_state_getMetadata.hex").is_file()


def test_an_unreachable_node_fails_fast_with_the_reason(tmp_path: Path) -> None:
    url = f"ws://127.0.0.1:{free_port()}"
    done = run_recorder("--network", url, "--out", str(tmp_path / "out"), "--timeout", "5")
    assert done.returncode == 1
    assert f"cannot record from {url}" in done.stderr
    assert "ConnectionRefusedError" in done.stderr
    assert not (tmp_path / "out").exists()


def test_a_silent_server_is_bounded_by_the_timeout(tmp_path: Path) -> None:
    """TCP accepted, no websocket handshake ever: the open timeout ends it."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        url = f"ws://127.0.0.1:{server.getsockname()[1]}"
        with pytest.raises(RecordError, match="TimeoutError"):
            record(url, tmp_path / "out", timeout_s=0.5)


@needs_kit
def test_a_node_that_stops_answering_is_bounded_by_the_timeout(tmp_path: Path) -> None:
    with devchain_process("--spec", "393", "--fixtures", str(KIT)) as url:
        rpc(url, "dev_fault", "stall", "state_call")
        with pytest.raises(RecordError, match=r"state_call: no answer within 0\.5s"):
            record(url, tmp_path / "out", timeout_s=0.5)
    assert recorded_specs(tmp_path / "out") == ()


def test_a_name_that_is_neither_a_network_nor_a_url_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RecordError, match="neither a network name"):
        record("no-such-network", tmp_path, timeout_s=1)


def test_network_names_resolve_like_the_sdk() -> None:
    assert record_metadata.resolve_network("test") == "wss://test.finney.opentensor.ai:443"
    assert record_metadata.resolve_network("finney") == "wss://entrypoint-finney.opentensor.ai:443"
    assert record_metadata.resolve_network("local") == "ws://127.0.0.1:9944"
    assert record_metadata.resolve_network("wss://node.example:443") == "wss://node.example:443"


def test_answers_without_v15_or_spec_are_refused() -> None:
    meta14 = "0x" + (b"meta\x0e" + b"\x00" * 8).hex()
    v15 = "0x01" + "10" + (b"meta\x0f" + b"\x00" * 3).hex()
    assert check_answers({"specVersion": 400}, v15, meta14) == (400, 14)
    with pytest.raises(RecordError, match="does not serve V15"):
        check_answers({"specVersion": 400}, "0x00", meta14)
    with pytest.raises(RecordError, match="specVersion"):
        check_answers({}, v15, meta14)
    with pytest.raises(RecordError, match="not runtime metadata"):
        check_answers({"specVersion": 400}, v15, "0x1234")


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "spec1_v15_metadata_at_version.hex"
    write_atomically(target, "0xold")

    def fail(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(record_metadata.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_atomically(target, "0xnew")
    assert target.read_text() == "0xold"
    assert [path.name for path in tmp_path.iterdir()] == [target.name]


def test_the_v15_file_is_written_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A recording cut short never leaves a V15 file, so the node never sees half of it."""
    answers = record_metadata.Answers(
        network="test",
        endpoint="wss://x",
        block_hash="0x00",
        runtime_version={"specVersion": 7},
        spec=7,
        v15="0x01",
        metadata="0x6d657461",
        metadata_version=14,
    )
    written: list[str] = []
    real = record_metadata.write_atomically

    def tracking(path: Path, text: str) -> None:
        written.append(path.name)
        real(path, text)

    monkeypatch.setattr(record_metadata, "write_atomically", tracking)
    record_metadata.save(answers, tmp_path)
    assert written[-1] == "spec7_v15_metadata_at_version.hex"
    assert written[:-1] == ["spec7_v14_state_getMetadata.hex", "spec7_recorded.json"]


def test_credentials_in_the_url_are_not_written(tmp_path: Path) -> None:
    answers = record_metadata.Answers(
        network="wss://user:secret@node.example/ws?apikey=secret",
        endpoint="wss://user:secret@node.example/ws?apikey=secret",
        block_hash="0x00",
        runtime_version={"specVersion": 7},
        spec=7,
        v15="0x01",
        metadata="0x6d657461",
        metadata_version=14,
    )
    record_metadata.save(answers, tmp_path)
    text = (tmp_path / "spec7_recorded.json").read_text()
    assert "secret" not in text and "wss://node.example/ws" in text
