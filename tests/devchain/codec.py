"""SCALE encoding and decoding for the node, with the SDK's own codec.

The node builds the same `async_substrate_interface.types.Runtime` the client builds
from the same metadata, so storage keys, storage values, events, extrinsics and
runtime-API results are produced by exactly the code that will read them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from async_substrate_interface.types import Runtime
from async_substrate_interface.utils.storage import StorageKey
from scalecodec import ScaleBytes  # type: ignore[attr-defined]
from scalecodec.base import RuntimeConfigurationObject
from scalecodec.type_registry import load_type_registry_preset
from scalecodec.utils.ss58 import ss58_decode, ss58_encode  # type: ignore[attr-defined]

from tests.devchain.fixtures import MetadataBlobs, load_blobs

SS58_FORMAT = 42
TRANSACTION_VERSION = 1


def to_public_key(address: str) -> bytes:
    """SS58 address or 0x-hex public key -> 32 raw bytes."""
    if address.startswith("0x"):
        raw = bytes.fromhex(address[2:])
    else:
        raw = bytes.fromhex(ss58_decode(address, valid_ss58_format=SS58_FORMAT))
    if len(raw) != 32:
        raise ValueError(f"not a 32-byte account: {address!r}")
    return raw


def to_ss58(account: str | bytes) -> str:
    """Public key (bytes or 0x-hex) or SS58 address -> SS58 address (prefix 42)."""
    if isinstance(account, bytes):
        return str(ss58_encode(account, SS58_FORMAT))
    if account.startswith("0x"):
        return str(ss58_encode(bytes.fromhex(account[2:]), SS58_FORMAT))
    to_public_key(account)  # validates
    return account


def _strip_compact_prefix(data: bytes) -> bytes:
    mode = data[0] & 0b11
    return data[{0: 1, 1: 2, 2: 4}.get(mode, 1 + (data[0] >> 2) + 4) :]


def blake2_256(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=32).digest()


@dataclass(slots=True)
class DecodedExtrinsic:
    """What the node needs to know about one submitted extrinsic."""

    raw: bytes
    hash: str
    signed: bool
    signer: str | None
    nonce: int
    tip: int
    era: Any
    pallet: str
    call: str
    args: dict[str, Any] = field(default_factory=dict)
    signature: Any = None


@dataclass(frozen=True, slots=True)
class RuntimeApiMethod:
    name: str
    inputs: tuple[tuple[str, int], ...]
    output: int


class RuntimeCodec:
    """One runtime's metadata, decoded once, with helpers in the node's vocabulary."""

    def __init__(self, blobs: MetadataBlobs) -> None:
        self.blobs = blobs
        self.spec = blobs.spec
        config = RuntimeConfigurationObject(ss58_format=SS58_FORMAT)
        config.clear_type_registry()
        config.update_type_registry(load_type_registry_preset(name="core") or {})
        metadata = config.create_scale_object("MetadataVersioned", data=ScaleBytes(blobs.v15))
        metadata.decode()
        self.runtime = Runtime(
            chain="Bittensor",
            metadata=metadata,
            type_registry={},
            runtime_config=config,
            metadata_v15=metadata,
            runtime_info={"specVersion": blobs.spec, "transactionVersion": TRANSACTION_VERSION},
            ss58_format=SS58_FORMAT,
        )
        self.config = config
        self.metadata = metadata
        registry: Any = metadata.portable_registry
        self._types: dict[int, dict[str, Any]] = {
            entry.value["id"]: entry.value["type"]
            for entry in registry.value_object["types"].value_object
        }
        self._apis: dict[str, RuntimeApiMethod] = {}
        for api, methods in self.runtime.runtime_api_map.items():
            for name, definition in methods.items():
                inputs = tuple((str(i["name"]), int(i["ty"])) for i in definition["inputs"])
                self._apis[f"{api}_{name}"] = RuntimeApiMethod(
                    f"{api}_{name}", inputs, int(definition["output"])
                )
        self._storage_cache: dict[tuple[str, str], Any] = {}

    # ------------------------------------------------------------------ metadata lookups
    def pallet(self, name: str) -> Any:
        pallet = self.metadata.get_metadata_pallet(name)
        if pallet is None:
            raise KeyError(f"pallet {name} not in metadata (spec {self.spec})")
        return pallet

    def has_storage(self, pallet: str, name: str) -> bool:
        found = self.metadata.get_metadata_pallet(pallet)
        return found is not None and found.get_storage_function(name) is not None

    def storage_function(self, pallet: str, name: str) -> Any:
        cached = self._storage_cache.get((pallet, name))
        if cached is None:
            cached = self.pallet(pallet).get_storage_function(name)
            if cached is None:
                raise KeyError(f"storage {pallet}.{name} not in metadata (spec {self.spec})")
            self._storage_cache[(pallet, name)] = cached
        return cached

    def has_event(self, pallet: str, event: str) -> bool:
        found = self.metadata.get_metadata_pallet(pallet)
        return found is not None and any(e.name == event for e in (found.events or []))

    def pallet_index(self, pallet: str) -> int:
        return int(self.pallet(pallet).value["index"])

    def module_error(self, name: str, pallet: str = "SubtensorModule") -> tuple[int, int, str]:
        """(pallet index, error index, docs) of a named module error in this runtime."""
        found = self.pallet(pallet)
        for position, error in enumerate(found.errors or []):
            if error.name == name:
                index = error.value.get("index", position)
                docs = " ".join(error.value.get("docs", [])).strip()
                return self.pallet_index(pallet), int(index), docs
        raise KeyError(f"error {pallet}.{name} not in metadata (spec {self.spec})")

    def constant(self, pallet: str, name: str) -> Any:
        for constant in self.pallet(pallet).constants or []:
            if constant.name == name:
                return self.decode(f"scale_info::{constant.value['type']}", constant.constant_value)
        raise KeyError(f"constant {pallet}.{name} not in metadata")

    def runtime_api(self, name: str) -> RuntimeApiMethod:
        try:
            return self._apis[name]
        except KeyError:
            raise KeyError(f"runtime API {name} not in metadata (spec {self.spec})") from None

    # ------------------------------------------------------------------ generic SCALE
    def encode(self, type_string: str, value: Any) -> bytes:
        obj = self.config.create_scale_object(type_string, metadata=self.metadata)
        encoded = obj.encode(value).data
        assert encoded is not None
        return bytes(encoded)

    def decode(self, type_string: str, data: bytes | bytearray) -> Any:
        obj = self.config.create_scale_object(
            type_string, data=ScaleBytes(bytes(data)), metadata=self.metadata
        )
        return obj.decode()

    def zero(self, type_id: int) -> Any:
        """A default value of a registry type, in the shape scalecodec encodes."""
        definition = self._types[type_id]["def"]
        path = self._types[type_id].get("path") or []
        if "composite" in definition:
            fields = definition["composite"]["fields"]
            if fields and all(f.get("name") is None for f in fields):
                if len(fields) == 1:
                    return self.zero(fields[0]["type"])
                return [self.zero(f["type"]) for f in fields]
            return {f["name"]: self.zero(f["type"]) for f in fields}
        if "variant" in definition:
            if path and path[-1] == "Option":
                return None
            first = definition["variant"]["variants"][0]
            if not first["fields"]:
                return first["name"]
            inner = [self.zero(f["type"]) for f in first["fields"]]
            return {first["name"]: inner[0] if len(inner) == 1 else inner}
        if "sequence" in definition:
            return []
        if "array" in definition:
            element = definition["array"]["type"]
            length = definition["array"]["len"]
            if self._types[element]["def"].get("primitive") == "u8":
                return "0x" + "00" * length
            return [self.zero(element) for _ in range(length)]
        if "tuple" in definition:
            return [self.zero(t) for t in definition["tuple"]]
        if "primitive" in definition:
            primitive = definition["primitive"]
            return False if primitive == "bool" else "" if primitive == "str" else 0
        if "compact" in definition:
            return 0
        raise NotImplementedError(f"no default for type {type_id}: {definition}")

    # ------------------------------------------------------------------ storage
    def storage_key(self, pallet: str, name: str, params: list[Any] | None = None) -> bytes:
        key = StorageKey.create_from_storage_function(
            pallet,
            name,
            params or [],
            runtime_config=self.config,
            metadata=self.metadata,
        )
        assert key.data is not None
        return bytes(key.data)

    def value_type(self, pallet: str, name: str) -> str:
        return str(self.storage_function(pallet, name).get_value_type_string())

    def encode_value(self, pallet: str, name: str, value: Any) -> bytes:
        return self.encode(self.value_type(pallet, name), value)

    def decode_value(self, pallet: str, name: str, data: bytes | None) -> Any:
        """Decode a stored value; a missing value decodes as the item's default."""
        function = self.storage_function(pallet, name)
        if data is None:
            if function.value["modifier"] != "Default":
                return None
            data = bytes(function.value_object["default"].value_object)
        return self.decode(self.value_type(pallet, name), data)

    # ------------------------------------------------------------------ extrinsics
    def decode_extrinsic(self, raw: bytes) -> DecodedExtrinsic:
        obj = self.config.create_scale_object(
            "Extrinsic", data=ScaleBytes(raw), metadata=self.metadata
        )
        value = obj.decode(check_remaining=True)
        call = value["call"]
        args = {arg["name"]: arg["value"] for arg in call.get("call_args", [])}
        address = value.get("address")
        signer = None
        if address is not None:
            signer = to_ss58(address if isinstance(address, str) else f"0x{bytes(address).hex()}")
        return DecodedExtrinsic(
            raw=raw,
            hash="0x" + blake2_256(raw).hex(),
            signed=signer is not None,
            signer=signer,
            nonce=int(value.get("nonce") or 0),
            tip=int(value.get("tip") or 0),
            era=value.get("era"),
            pallet=str(call["call_module"]),
            call=str(call["call_function"]),
            args=args,
            signature=value.get("signature"),
        )

    def signing_payload(self, ext: DecodedExtrinsic, genesis_hash: str, birth_hash: str) -> bytes:
        """What the signer must have signed, rebuilt from the raw extrinsic and the metadata.

        Substrate signs `call ++ extra ++ additional_signed` (blake2-256 of it when longer
        than 256 bytes). `extra` is copied from the extrinsic bytes; `additional_signed` is
        encoded here per signed extension, in metadata order.
        """
        body = _strip_compact_prefix(ext.raw)
        signature_length = 66 if "Ecdsa" in (ext.signature or {}) else 65
        extra_start = 1 + 33 + signature_length  # version, MultiAddress::Id, MultiSignature
        call_bytes = self.encode(
            "Call", {"call_module": ext.pallet, "call_function": ext.call, "call_args": ext.args}
        )
        if not body.endswith(call_bytes) or len(body) - len(call_bytes) < extra_start:
            raise ValueError("cannot locate the call in the extrinsic")
        extra = body[extra_start : len(body) - len(call_bytes)]
        known = {
            "CheckSpecVersion": self.spec,
            "CheckTxVersion": TRANSACTION_VERSION,
            "CheckGenesis": genesis_hash,
            "CheckMortality": birth_hash,
            "CheckEra": birth_hash,
            "CheckMetadataHash": None,
        }
        additional = b""
        for name, extension in self.metadata.get_signed_extensions().items():
            type_string = str(extension["additional_signed"])
            if name in known:
                additional += self.encode(type_string, known[name])
            else:
                type_id = int(type_string.split("::")[1])
                additional += self.encode(type_string, self.zero(type_id))
        payload = call_bytes + extra + additional
        return blake2_256(payload) if len(payload) > 256 else payload

    # ------------------------------------------------------------------ runtime API
    def decode_api_params(self, name: str, data: bytes) -> dict[str, Any]:
        method = self.runtime_api(name)
        stream = ScaleBytes(data)
        params: dict[str, Any] = {}
        for param, type_id in method.inputs:
            obj = self.config.create_scale_object(
                f"scale_info::{type_id}", data=stream, metadata=self.metadata
            )
            params[param] = obj.decode(check_remaining=False)
        return params

    def encode_api_result(self, name: str, value: Any) -> bytes:
        return self.encode(f"scale_info::{self.runtime_api(name).output}", value)

    def api_output_zero(self, name: str) -> Any:
        """Default value of a runtime API's output, unwrapped from `Option`/`Vec` to the item."""
        type_id = self.runtime_api(name).output
        while True:
            entry = self._types[type_id]
            definition = entry["def"]
            if (entry.get("path") or [])[-1:] == ["Option"]:
                type_id = definition["variant"]["variants"][1]["fields"][0]["type"]
            elif "sequence" in definition:
                type_id = definition["sequence"]["type"]
            else:
                return self.zero(type_id)


@lru_cache(maxsize=8)
def _codec(spec: int, directory: str | None, existential_deposit: int | None) -> RuntimeCodec:
    blobs = load_blobs(
        spec,
        directory=Path(directory) if directory else None,
        existential_deposit=existential_deposit,
    )
    return RuntimeCodec(blobs)


def codec_for(
    spec: int, *, directory: Path | None = None, existential_deposit: int | None = None
) -> RuntimeCodec:
    """A shared, read-only codec per (spec, fixtures dir, ED): metadata decodes once per process."""
    return _codec(spec, str(directory) if directory else None, existential_deposit)
