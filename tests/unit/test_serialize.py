"""Packed kernels and the report's device code JSON: what is spliced as text must equal what the encoder writes."""

from __future__ import annotations

import io
import json
import pickle

import pytest

from kaudit.formats.json import JsonFormat
from kaudit.inventory import (
    ArchSummary,
    CodeKind,
    DeviceCode,
    GpuBinary,
    Kernel,
    PackedKernels,
    ScanReport,
    ScanStats,
    Vendor,
)
from kaudit.serialize import device_code_json, to_jsonable

KERNELS = (
    Kernel("_Z3addPfS_", "add(float*, float*)", registers=12, code_size=256, shared_bytes=0, stack_bytes=0),
    Kernel("plain_c_kernel", None, registers=None, max_threads=1024),
    Kernel('_Z1f"quoted', "f\u00e9\\x", sgprs=8),
)


def _code(kernels: object, text: str = "x.cu") -> DeviceCode:
    return DeviceCode(Vendor.NVIDIA, CodeKind.SASS, "sm_90a", "fatbin#0", "ab" * 32, 10, 10, identifier=text,
                      notes=(text,), kernels=kernels)  # type: ignore[arg-type]  # fmt: skip


def test_packed_kernels_decode_to_what_was_packed() -> None:
    packed = PackedKernels.of(KERNELS)
    assert isinstance(packed, PackedKernels)
    assert len(packed) == 3 and tuple(packed) == KERNELS and packed[2] == KERNELS[2] and packed[:1] == KERNELS[:1]
    assert packed == KERNELS and packed == PackedKernels.of(KERNELS) and packed != KERNELS[:2]
    assert pickle.loads(pickle.dumps(packed)) == packed
    assert json.loads(packed.json_text()) == [to_jsonable(k) for k in KERNELS]
    assert PackedKernels.of(iter(())) == ()


def test_packing_in_batches_keeps_one_array() -> None:
    many = [Kernel(f"k{i}", None, registers=i) for i in range(2500)]
    packed = PackedKernels.of(many)
    assert json.loads(packed.json_text()) == [to_jsonable(k) for k in many]
    assert list(packed) == many


@pytest.mark.parametrize(
    "text", ['{"name": "x"}', "[1, 2", '[{"name": 1, "demangled": null}]', '[{"name": "k", "demangled": 3}]']
)
def test_malformed_packed_text_is_refused(text: str) -> None:
    import zstandard

    rows = json.loads(text) if text.startswith("[{") else None
    packed = PackedKernels(zstandard.ZstdCompressor().compress(text.encode()), len(rows) if rows else 1)
    with pytest.raises(ValueError):
        list(packed)


@pytest.mark.parametrize("hostile", ["x.cu", '"kernels": NaN', ', "kernels": NaN, "x', "NaN", "\u0000kernels"])
def test_spliced_json_equals_the_encoders(hostile: str) -> None:
    codes = [_code(PackedKernels.of(KERNELS), hostile), _code((), hostile), _code(KERNELS, hostile)]
    text = "".join(device_code_json(codes))
    assert json.loads(f"[{text}]") == json.loads(json.dumps([to_jsonable(code) for code in codes]))


def test_report_json_from_packed_kernels() -> None:
    code = _code(PackedKernels.of(KERNELS))
    binary = GpuBinary("lib/x.so", 10, "cd" * 32, "elf", (code,), ArchSummary(("sm_90a",)), ArchSummary())
    report = ScanReport("path", (binary,), (), ScanStats(), "0")
    stream = io.StringIO()
    JsonFormat().write(report, stream)
    (written,) = json.loads(stream.getvalue())["binaries"][0]["device_code"]
    assert written["kernels"] == [to_jsonable(k) for k in KERNELS] and written["loadable"] is True


def test_cyclonedx_json_nested_objects_equal_the_librarys() -> None:
    """The JSON writer adds device code objects itself (the library is slow on tens of thousands): what it writes
    must be what cyclonedx-python-lib writes for the same BOM."""
    from cyclonedx.output import make_outputter
    from cyclonedx.schema import OutputFormat, SchemaVersion

    from kaudit.formats.cyclonedx import CycloneDxJson, build_bom
    from tests.conftest import ROOT, scan

    report = scan(ROOT / "examples" / "inference-rootfs")
    library = json.loads(make_outputter(build_bom(report), OutputFormat.JSON, SchemaVersion.V1_6).output_as_string())
    ours = json.loads(CycloneDxJson().render(report))

    def nested(document: dict[str, object]) -> dict[str, list[str]]:
        components = document["components"]
        assert isinstance(components, list)
        return {c["bom-ref"]: sorted(json.dumps({**n, "properties": sorted(n["properties"], key=str)}, sort_keys=True)
                                     for n in c.get("components", [])) for c in components}  # fmt: skip

    assert nested(ours) == nested(library) and sum(map(len, nested(ours).values())) > 20
