"""Registries speaking the OCI distribution API v2 (``host[:port]/repo:tag`` or ``…@sha256:…``).

Authentication follows the registry's ``WWW-Authenticate`` challenge: anonymous first, then Basic with the
configured credentials, or a Bearer token fetched from the challenge's realm (anonymously or with the
credentials). Credentials come from ``--username``/``--password-stdin``, ``REGISTRY_AUTH_FILE`` (containers
auth.json) or ``~/.docker/config.json``. HTTPS is used unless the host is named with ``--insecure-registry``.
"""

from __future__ import annotations

import base64
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from kaudit.sources.interface import (
    INDEX_TYPES,
    MANIFEST_TYPES,
    MAX_MANIFEST_BYTES,
    ImageSource,
    LayerDescriptor,
    LayerReader,
    Platform,
    ResolvedImage,
    SourceError,
    check_digest,
    image_from_manifest,
    parse_json,
    pick_manifest,
    sha256_digest,
)

DOCKER_HUB = "registry-1.docker.io"
ACCEPT = ", ".join(sorted(MANIFEST_TYPES | INDEX_TYPES))
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
TIMEOUT = (10, 60)
_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True)
class Reference:
    """A parsed registry reference."""

    registry: str
    repository: str
    tag: str | None
    digest: str | None

    @classmethod
    def parse(cls, text: str) -> Reference:
        name, digest = text, None
        if "@" in text:
            name, digest = text.split("@", 1)
            if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
                raise SourceError(f"{text}: digest {digest!r} is not sha256:<64 hex digits>")
        tag = None
        last = name.rsplit("/", 1)[-1]
        if ":" in last:
            name, tag = name.rsplit(":", 1)
        first, _, rest = name.partition("/")
        if rest and ("." in first or ":" in first or first == "localhost"):
            registry, repository = first, rest
        else:
            registry, repository = DOCKER_HUB, name if "/" in name else f"library/{name}"
        component = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"  # the distribution spec's path component
        if not repository or not re.fullmatch(rf"{component}(?:/{component})*", repository):
            raise SourceError(f"{text}: {repository!r} is not a valid repository name")
        if tag is None and digest is None:
            tag = "latest"
        return cls(registry, repository, tag, digest)

    def __str__(self) -> str:
        base = f"{self.registry}/{self.repository}"
        return f"{base}@{self.digest}" if self.digest else f"{base}:{self.tag}"


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


def load_credentials(registry: str, explicit: Credentials | None = None) -> Credentials | None:
    """Credentials for ``registry``: explicit, then REGISTRY_AUTH_FILE, then ~/.docker/config.json."""
    if explicit is not None:
        return explicit
    candidates = [os.environ.get("REGISTRY_AUTH_FILE"), os.path.expanduser("~/.docker/config.json")]
    for path in filter(None, candidates):
        try:
            with open(path, encoding="utf-8") as handle:
                config = json.load(handle)
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as exc:
            raise SourceError(f"cannot read registry credentials from {path}: {exc}") from exc
        auths = config.get("auths") if isinstance(config, dict) else None
        if not isinstance(auths, dict):
            continue
        for key in (registry, f"https://{registry}", f"http://{registry}", f"https://{registry}/v1/"):
            entry = auths.get(key)
            if isinstance(entry, dict) and isinstance(entry.get("auth"), str):
                try:
                    username, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
                except (ValueError, UnicodeDecodeError) as exc:
                    raise SourceError(f"{path}: the credentials for {registry} are not base64 user:password") from exc
                return Credentials(username, password)
    return None


@dataclass
class RegistryClient:
    """A small OCI distribution client: manifests and blobs, with challenge-driven authentication."""

    reference: Reference
    insecure: bool = False
    credentials: Credentials | None = None
    push: bool = False
    """Ask the token service for push access too (``kaudit attest`` attaches attestations)."""
    timeout: tuple[float, float] = TIMEOUT
    """(connect, read) seconds; the admission webhook answers within the API server's timeoutSeconds."""
    _authorization: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        import requests

        self._session = requests.Session()

    @property
    def base(self) -> str:
        scheme = "http" if self.insecure else "https"
        return f"{scheme}://{self.reference.registry}/v2/{self.reference.repository}"

    def _request(self, url: str, headers: dict[str, str], stream: bool = False, method: str = "GET",
                 data: bytes | None = None) -> Any:  # fmt: skip
        import requests

        for attempt in range(2):
            all_headers = dict(headers)
            if self._authorization:
                all_headers["Authorization"] = self._authorization
            try:
                response = self._session.request(method, url, headers=all_headers, stream=stream, data=data,
                                                 timeout=self.timeout)  # fmt: skip
            except requests.exceptions.SSLError as exc:
                raise SourceError(f"{self.reference.registry}: TLS verification failed ({exc}); use "
                                  "--insecure-registry for a plain-HTTP registry") from exc  # fmt: skip
            except requests.RequestException as exc:
                raise SourceError(f"{self.reference.registry}: cannot connect: {exc}") from exc
            if response.status_code == 401:
                response.close()
                if attempt == 0:
                    self._authorization = self._authenticate(response.headers.get("WWW-Authenticate", ""))
                    continue
                break
            return response
        raise SourceError(f"{self.reference}: authentication failed (credentials refused or missing)")

    def _authenticate(self, challenge: str) -> str:
        import requests

        scheme, _, params_text = challenge.partition(" ")
        params = dict(_CHALLENGE.findall(params_text))
        if scheme.lower() == "basic":
            if self.credentials is None:
                raise SourceError(f"{self.reference.registry} requires credentials (--username, --password-stdin "
                                  "or ~/.docker/config.json)")  # fmt: skip
            token = base64.b64encode(f"{self.credentials.username}:{self.credentials.password}".encode()).decode()
            return f"Basic {token}"
        if scheme.lower() != "bearer" or "realm" not in params:
            raise SourceError(f"{self.reference.registry}: unsupported authentication challenge {challenge!r}")
        query = {k: v for k, v in params.items() if k in ("service", "scope")}
        query.setdefault("scope", f"repository:{self.reference.repository}:{'pull,push' if self.push else 'pull'}")
        auth = (self.credentials.username, self.credentials.password) if self.credentials else None
        try:
            response = self._session.get(params["realm"], params=query, auth=auth, timeout=self.timeout)
        except requests.RequestException as exc:
            raise SourceError(f"{self.reference.registry}: token service unreachable: {exc}") from exc
        if response.status_code != 200:
            raise SourceError(f"{self.reference.registry}: token service refused ({response.status_code})")
        try:
            body = response.json()
        except ValueError as exc:
            raise SourceError(f"{self.reference.registry}: token service answered with invalid JSON") from exc
        bearer: object = (body.get("token") or body.get("access_token")) if isinstance(body, dict) else None
        if not isinstance(bearer, str):
            raise SourceError(f"{self.reference.registry}: token service answered without a token")
        return f"Bearer {bearer}"

    def _read_small(self, response: Any, what: str) -> bytes:
        data = bytearray()
        for chunk in response.iter_content(65536):
            data += chunk
            if len(data) > MAX_MANIFEST_BYTES:
                raise SourceError(f"{what} is over the {MAX_MANIFEST_BYTES}-byte limit")
        return bytes(data)

    def manifest(self, ref: str) -> tuple[bytes, str, str]:
        """The manifest named by tag or digest: ``(body, media type, digest)``; the digest is checked."""
        response = self._request(f"{self.base}/manifests/{ref}", {"Accept": ACCEPT}, stream=True)
        with response:
            if response.status_code == 404:
                raise SourceError(f"{self.reference.registry}/{self.reference.repository}:{ref}: no such image")
            if response.status_code != 200:
                raise SourceError(f"{self.reference}: the registry answered {response.status_code} for a manifest")
            body = self._read_small(response, f"{self.reference}: manifest")
            media_type = response.headers.get("Content-Type", "").split(";")[0]
        digest = sha256_digest(body)
        if ref.startswith("sha256:"):
            check_digest(ref, body, f"{self.reference}: manifest")
        return body, media_type, digest

    def blob(self, digest: str, what: str) -> bytes:
        response = self._request(f"{self.base}/blobs/{digest}", {}, stream=True)
        with response:
            if response.status_code != 200:
                raise SourceError(f"{self.reference}: {what} {digest}: the registry answered {response.status_code}")
            data = self._read_small(response, f"{self.reference}: {what}")
        check_digest(digest, data, f"{self.reference}: {what}")
        return data

    def put_blob(self, data: bytes) -> str:
        """Upload ``data`` (monolithic POST + PUT); returns its digest."""
        from urllib.parse import urljoin

        digest = sha256_digest(data)
        started = self._request(f"{self.base}/blobs/uploads/", {"Content-Length": "0"}, method="POST")
        location = started.headers.get("Location")
        if started.status_code != 202 or not location:
            raise SourceError(f"{self.reference}: the registry refused a blob upload ({started.status_code})")
        url = urljoin(self.base + "/", location)
        url += ("&" if "?" in url else "?") + f"digest={digest}"
        done = self._request(url, {"Content-Type": "application/octet-stream"}, method="PUT", data=data)
        if done.status_code != 201:
            raise SourceError(f"{self.reference}: the registry refused blob {digest} ({done.status_code})")
        return digest

    def put_manifest(self, ref: str, body: bytes, media_type: str) -> str:
        """Store a manifest (or index) under ``ref`` (a tag or its digest); returns its digest."""
        response = self._request(f"{self.base}/manifests/{ref}", {"Content-Type": media_type}, method="PUT",
                                 data=body)  # fmt: skip
        if response.status_code != 201:
            raise SourceError(f"{self.reference}: the registry refused manifest {ref} ({response.status_code}: "
                              f"{response.text[:200]})")  # fmt: skip
        return sha256_digest(body)

    def referrers(self, digest: str) -> list[dict[str, Any]] | None:
        """The OCI 1.1 referrers of ``digest``, or ``None`` when the registry has no referrers API."""
        response = self._request(f"{self.base}/referrers/{digest}", {"Accept": OCI_INDEX}, stream=True)
        with response:
            if response.status_code != 200 or not response.headers.get("Content-Type", "").startswith(OCI_INDEX):
                return None
            body = self._read_small(response, f"{self.reference}: referrers")
        return _descriptors(body)

    def tag_index(self, tag: str) -> list[dict[str, Any]]:
        """The descriptors of the index stored under ``tag`` (the referrers tag schema), or none."""
        response = self._request(f"{self.base}/manifests/{tag}", {"Accept": OCI_INDEX}, stream=True)
        with response:
            if response.status_code == 404:
                return []
            if response.status_code != 200:
                raise SourceError(f"{self.reference}: the registry answered {response.status_code} for {tag}")
            body = self._read_small(response, f"{self.reference}: index {tag}")
        return _descriptors(body)

    def exists(self, ref: str) -> bool:
        response = self._request(f"{self.base}/manifests/{ref}", {"Accept": ACCEPT}, method="HEAD")
        response.close()
        return bool(response.status_code == 200)

    def blob_request(self, digest: str) -> tuple[str, dict[str, str]]:
        """URL and headers a worker process needs to stream a blob itself."""
        if self._authorization is None:  # provoke the challenge once so workers inherit a token
            self._request(f"{self.base}/blobs/{digest}", {}, stream=True).close()
        headers = {"Authorization": self._authorization} if self._authorization else {}
        return f"{self.base}/blobs/{digest}", headers


def _descriptors(body: bytes) -> list[dict[str, Any]]:
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise SourceError(f"an index is not JSON: {exc}") from exc
    manifests = document.get("manifests") if isinstance(document, dict) else None
    return [m for m in manifests if isinstance(m, dict)] if isinstance(manifests, list) else []


@dataclass(frozen=True)
class RegistryLayerReader(LayerReader):
    """Streams a layer blob from the registry (in whichever process opens it)."""

    url: str
    headers: tuple[tuple[str, str], ...]

    def open(self) -> BinaryIO:
        import requests

        try:
            response = requests.get(self.url, headers=dict(self.headers), stream=True, timeout=TIMEOUT)
        except requests.RequestException as exc:
            raise SourceError(f"cannot fetch layer {self.url}: {exc}") from exc
        if response.status_code != 200:
            response.close()
            raise SourceError(f"layer {self.url}: the registry answered {response.status_code}")
        response.raw.decode_content = False
        stream: BinaryIO = response.raw
        return stream


class RegistrySource(ImageSource):
    """An image in a registry."""

    def __init__(self, reference: str, *, insecure_hosts: frozenset[str] = frozenset(),
                 credentials: Credentials | None = None) -> None:  # fmt: skip
        self._reference = Reference.parse(reference)
        self._client = RegistryClient(
            self._reference,
            insecure=self._reference.registry in insecure_hosts,
            credentials=load_credentials(self._reference.registry, credentials),
        )

    def resolve(self, platform: Platform) -> ResolvedImage:
        ref = self._reference
        body, media_type, digest = self._client.manifest(ref.digest or ref.tag or "latest")
        document = parse_json(body, f"{ref}: manifest")
        media_type = str(document.get("mediaType") or media_type)
        index_digest = None
        if media_type in INDEX_TYPES or "manifests" in document:
            index_digest = digest
            descriptor = pick_manifest(document, platform, f"{ref}: index")
            body, _media_type, digest = self._client.manifest(str(descriptor["digest"]))
            document = parse_json(body, f"{ref}: manifest")
        config_digest = str((document.get("config") or {}).get("digest", ""))
        config = parse_json(self._client.blob(config_digest, "config"), f"{ref}: config")
        return image_from_manifest(str(ref), digest, document, config, str(platform), index_digest)

    def layer_reader(self, layer: LayerDescriptor) -> LayerReader:
        url, headers = self._client.blob_request(layer.digest)
        return RegistryLayerReader(url, tuple(headers.items()))
