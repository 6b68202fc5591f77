"""Merge per-layer results into the image's final filesystem (the Trivy ``ApplyLayers`` pattern).

Whiteouts apply to lower layers only: ``.wh.<name>`` hides a path and everything under it, ``.wh..wh..opq`` hides
every lower-layer child of its directory, both before the same layer's own entries. A later layer's entry at the
same path replaces the lower one. Files that were deleted or replaced are kept aside: they still shipped to
every node, and ``--all-layers`` reports them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from kaudit.inventory import FileStatus, GpuBinary, LayerRef
from kaudit.owners.model import PackageFiles
from kaudit.walk.layers import LayerFile, LayerResult

MAX_SYMLINK_HOPS = 40


@dataclass
class ImageView:
    """The merged filesystem: what a container of the image sees, and what was removed on the way."""

    layers: list[LayerRef]
    files: dict[str, tuple[int, LayerFile]] = field(default_factory=dict)
    symlinks: dict[str, tuple[int, str]] = field(default_factory=dict)
    texts: dict[str, tuple[int, str]] = field(default_factory=dict)
    packages: list[tuple[int, PackageFiles]] = field(default_factory=list)
    binaries: list[GpuBinary] = field(default_factory=list)
    removed_binaries: list[GpuBinary] = field(default_factory=list)
    _directories: dict[str, str] = field(default_factory=dict, repr=False)

    def layer(self, index: int) -> LayerRef:
        return self.layers[index]

    def resolve(self, path: str) -> str:
        """``path`` with every symlinked component followed inside the image (never outside its root).

        Directories are resolved once: attribution resolves every file each package database lists."""
        directory, _, name = path.rpartition("/")
        if name in ("", ".", ".."):
            return self._follow(path)[0]
        parent = self._directories.get(directory)
        if parent is None:
            parent, looped = self._follow(directory)
            if looped:
                return self._follow(path)[0]
            self._directories[directory] = parent
        candidate = f"{parent}/{name}" if parent else name
        return self._follow(path)[0] if candidate in self.symlinks else candidate

    def _follow(self, path: str) -> tuple[str, bool]:
        """``path`` resolved component by component, and whether a symlink loop stopped the walk."""
        parts = [p for p in path.split("/") if p]
        resolved: list[str] = []
        hops = 0
        while parts:
            part = parts.pop(0)
            if part == ".":
                continue
            if part == "..":
                if resolved:
                    resolved.pop()
                continue
            candidate = "/".join([*resolved, part])
            link = self.symlinks.get(candidate)
            if link is None:
                resolved.append(part)
                continue
            hops += 1
            if hops > MAX_SYMLINK_HOPS:
                return candidate, True  # a loop: stop where it started going round
            target = link[1]
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p] + parts
        return "/".join(resolved), False


def merge(results: list[LayerResult], layers: list[LayerRef], *, keep_removed: bool) -> ImageView:
    """The final filesystem of the image whose layers gave ``results`` (bottom layer first)."""
    view = ImageView(layers)
    entries: dict[str, int] = {}  # path -> layer index of its visible entry
    binaries: dict[tuple[int, str], GpuBinary] = {}
    removed: dict[tuple[int, str], tuple[FileStatus, int]] = {}
    for index, result in enumerate(results):
        hidden = set(result.whiteouts)
        prefixes = tuple(d.rstrip("/") + "/" for d in result.opaque_dirs if d) + tuple(w + "/" for w in hidden)
        hide_everything = "" in result.opaque_dirs
        if hidden or prefixes or hide_everything:
            for path in [p for p, layer in entries.items() if layer < index]:
                if hide_everything or path in hidden or path.startswith(prefixes):
                    removed[(entries.pop(path), path)] = (FileStatus.DELETED, index)
        for path in (*result.files, *result.symlinks, *result.hardlinks):
            lower = entries.get(path)
            if lower is not None and lower < index:
                removed[(lower, path)] = (FileStatus.REPLACED, index)
            entries[path] = index
        for binary in result.binaries:
            binaries[(index, binary.path)] = binary
        for link, target in result.hardlinks.items():
            original = binaries.get((index, target))
            if original is not None:  # a hardlink is the same file under another name
                binaries[(index, link)] = replace(original, path=link)

    for path, index in entries.items():
        result = results[index]
        if path in result.files:
            view.files[path] = (index, result.files[path])
            if path in result.texts:
                view.texts[path] = (index, result.texts[path])
        elif path in result.symlinks:
            view.symlinks[path] = (index, result.symlinks[path])
        elif path in result.hardlinks:
            target = result.hardlinks[path]
            if target in result.files:
                view.files[path] = (index, result.files[target])
                if target in result.texts:
                    view.texts[path] = (index, result.texts[target])
    for index, result in enumerate(results):
        for package in result.packages:
            if entries.get(package.database) == index:
                view.packages.append((index, package))
    for (index, path), binary in binaries.items():
        placed = replace(binary, layer=layers[index])
        container = path.split("!/", 1)[0]  # code embedded in a pickle or an archive lives as long as its file
        if entries.get(container) == index:
            view.binaries.append(placed)
        elif keep_removed and (index, container) in removed:
            status, by = removed[(index, container)]
            view.removed_binaries.append(replace(placed, status=status, removed_in_layer=by))
    view.binaries.sort(key=lambda b: b.path)
    view.removed_binaries.sort(key=lambda b: (b.path, b.layer.index if b.layer else 0))
    return view
