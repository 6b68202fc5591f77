"""CycloneDX 1.6 SBOM fragments (JSON and XML) with cyclonedx-python-lib.

``metadata.component`` is the scanned subject (an image: ``pkg:oci/<name>@<digest>``; or a path). Each GPU binary
is a component (its sha-256, an evidence occurrence with path and layer) with one nested ``file`` component per
device code object (its payload's sha-256); package components (``pkg:pypi``, ``pkg:deb``, ``pkg:rpm``,
``pkg:conda``) depend on the GPU binaries they own; Kernel Hub kernels (``pkg:huggingface/<org>/<name>@<commit>``)
and runtime cache entries are components that depend on the binaries they hold. What CycloneDX has no field for
is a property of the ``kaudit:`` taxonomy (docs/taxonomy.md).

cyclonedx-python-lib registers dependencies by scanning its dependency list once per component, which is
quadratic (sbom-and-scanning.md §2.5); :func:`_index_dependencies` keeps an index instead.
"""

from __future__ import annotations

import copy
import json
import posixpath
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.component_evidence import ComponentEvidence, Occurrence
from cyclonedx.model.dependency import Dependable, Dependency
from cyclonedx.model.lifecycle import LifecyclePhase, PredefinedLifecycle
from cyclonedx.output import make_outputter
from cyclonedx.schema import OutputFormat, SchemaVersion
from packageurl import PackageURL

from kaudit import __version__
from kaudit.errors import UsageError
from kaudit.formats.interface import Format, printable
from kaudit.inventory import CacheEntry, DeviceCode, GpuBinary, Owner, ScanReport

if TYPE_CHECKING:
    from kaudit.policy.model import PolicyResult

SERIAL_NAMESPACE = uuid.UUID("5d1c6a3e-4b1f-4c43-9a4e-6b6175646974")
"""UUIDv5 namespace of kaudit's BOM serial numbers: the same subject and kaudit version give the same serial, so
fragments and BOM-Links stay stable across runs."""


def _index_dependencies(bom: Bom) -> None:
    """Make ``bom.register_dependency`` a dictionary lookup instead of a scan of every dependency (the library's
    own is quadratic in the number of components)."""
    index: dict[str, Dependency] = {}

    def register_dependency(target: Dependable, depends_on: Iterable[Dependable] | None = None) -> None:
        depends_on = list(depends_on or ())
        existing = index.get(str(target.bom_ref))
        if existing is None:
            existing = index[str(target.bom_ref)] = Dependency(ref=target.bom_ref)
            bom.dependencies.add(existing)
        existing.dependencies.update(Dependency(ref=d.bom_ref) for d in depends_on)
        for dependency in depends_on:
            if str(dependency.bom_ref) not in index:
                register_dependency(dependency)

    bom.register_dependency = register_dependency  # type: ignore[method-assign]


def _props(pairs: Iterable[tuple[str, str | None]]) -> list[Property]:
    return [Property(name=name, value=printable(value)) for name, value in pairs if value]


def _sha256(hex_digest: str) -> list[HashType]:
    return [HashType(alg=HashAlgorithm.SHA_256, content=hex_digest)]


def _subject(report: ScanReport) -> Component:
    image = report.image
    if image is None:
        return Component(type=ComponentType.FILE, name=report.subject, bom_ref="subject")
    reference = image.reference.split("@", 1)[0]
    last = reference.rsplit("/", 1)[-1]
    name = last.split(":", 1)[0]
    repository = reference.rsplit(":", 1)[0] if ":" in last else reference
    qualifiers = {"arch": image.platform.split("/")[1]} if "/" in image.platform else {}
    if "/" in repository and not repository.startswith(("oci:", "docker-archive:")):
        qualifiers["repository_url"] = repository
    purl = PackageURL(type="oci", name=name.lower(), version=image.manifest_digest, qualifiers=qualifiers)
    return Component(type=ComponentType.CONTAINER, name=repository, version=image.manifest_digest, purl=purl,
                     bom_ref="subject",
                     properties=_props([("kaudit:image:reference", image.reference),
                                        ("kaudit:image:platform", image.platform)]))  # fmt: skip


def _package(owner: Owner) -> Component:
    try:
        purl: PackageURL | None = PackageURL.from_string(owner.purl)
    except ValueError:
        purl = None
    return Component(type=ComponentType.LIBRARY, name=owner.name, version=owner.version, purl=purl,
                     bom_ref=owner.purl, properties=_props([("kaudit:package:database", owner.database)]))  # fmt: skip


def _code_properties(codes: Iterable[DeviceCode]) -> list[tuple[str, str | None]]:
    codes = list(codes)
    vendors = sorted({code.vendor.value for code in codes})
    kinds = sorted({code.kind.value for code in codes})
    compressions = sorted({code.compression.value for code in codes if code.compression.value != "none"})
    return [("kaudit:gpu:vendor", ",".join(vendors)), ("kaudit:gpu:kind", ",".join(kinds)),
            ("kaudit:gpu:compression", ",".join(compressions) or "none")]  # fmt: skip


def _binary(binary: GpuBinary, nested: bool = True) -> Component:
    loadable = binary.loadable
    layer = binary.layer
    properties = _props([
        *_code_properties(binary.device_code),
        ("kaudit:gpu:sass-archs", ",".join(sorted(loadable.sass_archs))),
        ("kaudit:gpu:ptx-archs", ",".join(sorted(loadable.ptx_archs))),
        ("kaudit:gpu:hsaco-targets", ",".join(sorted(loadable.gfx_targets))),
        ("kaudit:gpu:kernel-count", str(loadable.kernel_count)),
        ("kaudit:gpu:object-count", str(len(binary.device_code))),
        ("kaudit:gpu:relocatable", "true" if binary.relocatable.object_count else "false"),
        ("kaudit:file:format", binary.format),
        ("kaudit:file:status", binary.status.value),
        ("kaudit:layer:digest", layer.digest if layer else None),
        ("kaudit:layer:diff-id", layer.diff_id if layer else None),
        ("kaudit:layer:created-by", layer.created_by if layer else None),
    ])  # fmt: skip
    path = printable(binary.path)
    occurrence = Occurrence(location=path,
                            additional_context=f"layer {layer.index} {layer.digest}" if layer else None)  # fmt: skip
    return Component(
        type=ComponentType.LIBRARY if ".so" in posixpath.basename(binary.path) else ComponentType.FILE,
        name=posixpath.basename(path.split("!/")[-1]) or path,
        bom_ref=f"kaudit:file:{path}",
        hashes=_sha256(binary.sha256),
        properties=properties,
        evidence=ComponentEvidence(occurrences=[occurrence]),
        # given to the constructor: the library's sorted sets hash a component with all its nested components, and
        # adding them one by one re-sorted (and re-hashed) the set every time
        components=[Component(type=ComponentType.FILE, name=name, bom_ref=ref, hashes=_sha256(digest),
                              properties=_props(pairs)) for name, ref, digest, pairs in _objects(binary)] if nested
        else [],
    )  # fmt: skip


def _objects(binary: GpuBinary) -> Iterator[tuple[str, str, str, list[tuple[str, str | None]]]]:
    """(name, bom-ref, payload sha256, properties) of each device code object of ``binary``."""
    path = printable(binary.path)
    for index, code in enumerate(binary.device_code):
        yield (f"{code.arch or code.kind.value} {code.kind.value} #{index}", f"kaudit:file:{path}#{index}",
               code.sha256, [("kaudit:gpu:vendor", code.vendor.value), ("kaudit:gpu:kind", code.kind.value),
                             ("kaudit:gpu:arch", code.arch), ("kaudit:gpu:compression", code.compression.value),
                             ("kaudit:gpu:relocatable", "true" if code.relocatable else "false"),
                             ("kaudit:gpu:kernel-count", str(len(code.kernels))),
                             ("kaudit:gpu:location", code.location), ("kaudit:gpu:toolkit", code.toolkit)])  # fmt: skip


def _objects_json(binary: GpuBinary) -> list[dict[str, Any]]:
    """The nested components of ``binary`` as CycloneDX JSON, exactly as the library writes them."""
    return [{"bom-ref": ref, "type": "file", "name": printable(name),
             "hashes": [{"alg": "SHA-256", "content": digest}],
             "properties": [{"name": key, "value": printable(value)} for key, value in pairs if value]}
            for name, ref, digest, pairs in _objects(binary)]  # fmt: skip


def _cache_entry(entry: CacheEntry) -> Component:
    details = dict(entry.details)
    properties = [("kaudit:cache:type", entry.type), ("kaudit:cache:key", entry.key),
                  ("kaudit:cache:path", entry.path), ("kaudit:gpu:arch", ",".join(entry.archs)),
                  ("kaudit:layer:digest", entry.layer.digest if entry.layer else None)]  # fmt: skip
    properties += [(f"kaudit:cache:{key}", value) for key, value in entry.details if key != "ref"]
    if entry.type == "hf-kernel-hub":
        org, _, name = details.get("repository", "/").partition("/")
        purl = PackageURL(type="huggingface", namespace=org, name=name, version=details.get("commit"),
                          qualifiers={"variant": details["variant"]} if "variant" in details else None)  # fmt: skip
        return Component(type=ComponentType.LIBRARY, name=details.get("repository", entry.key),
                         version=details.get("commit"), purl=purl, bom_ref=f"kaudit:cache:{printable(entry.path)}",
                         properties=_props(properties))  # fmt: skip
    return Component(type=ComponentType.DATA if not entry.binaries else ComponentType.FILE,
                     name=printable(f"{entry.type} {entry.key}".strip()),
                     bom_ref=f"kaudit:cache:{printable(entry.path)}",
                     properties=_props(properties))  # fmt: skip


def build_bom(report: ScanReport, nested: bool = True) -> Bom:
    """The BOM; ``nested=False`` leaves out the device code objects (the JSON writer adds them itself)."""
    subject = _subject(report)
    identity = report.image.manifest_digest if report.image is not None else report.subject
    binaries = {binary.path: _binary(binary, nested) for binary in report.binaries}  # by the report's own paths
    packages: dict[str, Component] = {}
    owned: dict[str, list[Component]] = {}
    for binary in report.binaries:
        if binary.owner is not None:
            packages.setdefault(binary.owner.purl, _package(binary.owner))
            owned.setdefault(binary.owner.purl, []).append(binaries[binary.path])
    caches = [(entry, _cache_entry(entry)) for entry in report.caches]
    bom = Bom(
        serial_number=uuid.uuid5(SERIAL_NAMESPACE, f"{identity} kaudit {__version__}"),
        metadata=BomMetaData(
            timestamp=datetime.now(UTC),
            component=subject,
            lifecycles=[PredefinedLifecycle(LifecyclePhase.POST_BUILD)],
            properties=_props([("kaudit:tool:version", __version__)]),
        ),
        # all at once: the library keeps components in sorted sets, and one insertion at a time re-sorts them
        components=[*binaries.values(), *packages.values(), *(component for _entry, component in caches)],
    )
    _index_dependencies(bom)
    for purl, components in owned.items():
        bom.register_dependency(packages[purl], components)
    for entry, component in caches:
        bom.register_dependency(component, [binaries[p] for p in entry.binaries if p in binaries])
    owned_paths = {b.path for b in report.binaries if b.owner is not None}
    direct = [*packages.values(), *(component for _entry, component in caches),
              *(c for path, c in binaries.items() if path not in owned_paths)]  # fmt: skip
    bom.register_dependency(subject, direct)
    return bom


class CycloneDxJson(Format):
    """JSON. The library builds and writes the BOM; the device code objects (22,115 of them in the several-GB image
    of docs/performance.md, where the library alone took 30 s and 678 MiB) are added to each GPU binary's
    component as the library would write them."""

    name = "cyclonedx-json"
    is_manifest = True

    def __init__(self, merge_into: dict[str, Any] | None = None) -> None:
        self.merge_into = merge_into

    def render(self, report: ScanReport, policy: PolicyResult | None = None) -> str:
        outputter = make_outputter(build_bom(report, nested=False), OutputFormat.JSON, SchemaVersion.V1_6)
        document: dict[str, Any] = json.loads(outputter.output_as_string())
        nested = {f"kaudit:file:{printable(b.path)}": b for b in report.binaries if b.device_code}
        for component in document.get("components", []):
            binary = nested.get(component.get("bom-ref", ""))
            if binary is not None:
                component["components"] = _objects_json(binary)
        if self.merge_into is not None:
            document = merge(self.merge_into, document)
        return json.dumps(document) + "\n"  # no indent: only the unindented encoder is the C one


class CycloneDxXml(Format):
    name = "cyclonedx-xml"
    is_manifest = True

    def render(self, report: ScanReport, policy: PolicyResult | None = None) -> str:
        text: str = make_outputter(build_bom(report), OutputFormat.XML, SchemaVersion.V1_6).output_as_string(indent=2)
        return text + "\n"


def _walk(components: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for component in components:
        yield component
        yield from _walk(component.get("components", []))


def merge(existing: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any]:
    """``existing`` (e.g. Syft's SBOM) with kaudit's components added: a package it already lists (same purl) is
    linked to, not duplicated; kaudit's subject becomes the existing BOM's own root component."""
    if existing.get("bomFormat") != "CycloneDX" or not isinstance(existing.get("components", []), list):
        raise UsageError("--merge-into needs a CycloneDX JSON SBOM")
    merged = copy.deepcopy(existing)
    components: list[dict[str, Any]] = merged.setdefault("components", [])
    by_purl = {c["purl"]: c.get("bom-ref") for c in _walk(components) if c.get("purl") and c.get("bom-ref")}
    renamed: dict[str, str] = {}
    root = merged.get("metadata", {}).get("component", {}).get("bom-ref")
    if root:
        renamed["subject"] = root
    for component in ours.get("components", []):
        linked = by_purl.get(component.get("purl", ""))
        if linked is not None:
            renamed[component["bom-ref"]] = linked
        else:
            components.append(component)
    dependencies: list[dict[str, Any]] = merged.setdefault("dependencies", [])
    by_ref = {d["ref"]: d for d in dependencies}
    for dependency in ours.get("dependencies", []):
        ref = renamed.get(dependency["ref"], dependency["ref"])
        depends_on = [renamed.get(r, r) for r in dependency.get("dependsOn", [])]
        if ref == "subject" and root is None:
            continue  # the existing BOM has no root to hang kaudit's components from
        if ref in by_ref:
            known = by_ref[ref].setdefault("dependsOn", [])
            known.extend(r for r in depends_on if r not in known)
        else:
            by_ref[ref] = {"ref": ref, "dependsOn": depends_on}
            dependencies.append(by_ref[ref])
    if tuple(int(p) for p in str(merged.get("specVersion", "1.6")).split(".")) < (1, 6):
        merged["specVersion"] = "1.6"
        merged["$schema"] = "http://cyclonedx.org/schema/bom-1.6.schema.json"
    tools = merged.setdefault("metadata", {}).setdefault("tools", {})
    if isinstance(tools, dict):
        tools.setdefault("components", []).append({"type": "application", "name": "kaudit", "version": __version__})
    return merged
