"""Real OCI registries for the tests: Debian's ``docker-registry`` (CNCF distribution 2.8) on 127.0.0.1.

Each registry gets a config the test writes (storage in a temporary directory, a free loopback port) and is
stopped by its PID. Three flavours: anonymous, htpasswd (Basic), and token auth, where a small token service
started here issues RS256 JWTs that the registry verifies against a certificate the test generated — the same
Bearer flow as Docker Hub or Quay. Images are pushed with ``skopeo``.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

USER, PASSWORD = "kaudit", "s3cret-pw"
SERVICE, ISSUER = "kaudit-test-registry", "kaudit-test-token-issuer"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Registry:
    host: str
    process: subprocess.Popen[bytes]
    directory: Path
    auth: str
    token_server: ThreadingHTTPServer | None = None

    def push(self, layout: Path, tag: str, repository: str = "kaudit/test", *, all_platforms: bool = False) -> None:
        command = ["skopeo", "copy", "--dest-tls-verify=false", "--quiet"]
        if all_platforms:
            command.append("--all")
        if self.auth != "none":
            command.append(f"--dest-creds={USER}:{PASSWORD}")
        command += [f"oci:{layout}:{tag}", f"docker://{self.host}/{repository}:{tag}"]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        if self.token_server is not None:
            self.token_server.shutdown()
        shutil.rmtree(self.directory, ignore_errors=True)


def start_registry(directory: Path, auth: str = "none") -> Registry:
    """Start ``docker-registry`` with ``auth`` = ``none``, ``htpasswd`` or ``token``."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = [
        "version: 0.1",
        "log: {level: error}",
        f"storage: {{filesystem: {{rootdirectory: {directory / 'data'}}}, delete: {{enabled: true}}}}",
        f"http: {{addr: 127.0.0.1:{port}}}",
    ]
    token_server = None
    if auth == "htpasswd":
        import bcrypt

        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
        (directory / "htpasswd").write_text(f"{USER}:{hashed}\n")
        config.append(f"auth: {{htpasswd: {{realm: kaudit-test, path: {directory / 'htpasswd'}}}}}")
    elif auth == "token":
        token_server, realm = _start_token_server(directory)
        config.append(
            f"auth: {{token: {{realm: {realm}, service: {SERVICE}, issuer: {ISSUER}, "
            f"rootcertbundle: {directory / 'token.crt'}}}}}"
        )
    (directory / "config.yml").write_text("\n".join(config) + "\n")
    process = subprocess.Popen(
        ["docker-registry", "serve", str(directory / "config.yml")],
        stdout=open(directory / "registry.log", "wb"),  # noqa: SIM115 - lives as long as the registry
        stderr=subprocess.STDOUT,
    )
    registry = Registry(f"127.0.0.1:{port}", process, directory, auth, token_server)
    deadline = time.monotonic() + 20
    while True:
        try:
            urllib.request.urlopen(f"http://{registry.host}/v2/", timeout=1)
            break
        except urllib.error.HTTPError:
            break  # 401 from an authenticating registry: it is up
        except OSError as exc:
            if time.monotonic() > deadline or process.poll() is not None:
                log = (directory / "registry.log").read_text()
                registry.stop()
                raise RuntimeError(f"docker-registry did not start: {log}") from exc
            time.sleep(0.05)
    return registry


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _start_token_server(directory: Path) -> tuple[ThreadingHTTPServer, str]:
    """A token service: Basic credentials (or none, for anonymous pulls) in, a signed JWT out."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256())
    )  # fmt: skip
    (directory / "token.crt").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    x5c = base64.b64encode(certificate.public_bytes(serialization.Encoding.DER)).decode()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            return

        def do_GET(self) -> None:
            from urllib.parse import parse_qs, urlparse

            query = parse_qs(urlparse(self.path).query)
            header = self.headers.get("Authorization", "")
            user = ""
            if header.startswith("Basic "):
                given = base64.b64decode(header[6:]).decode()
                if given != f"{USER}:{PASSWORD}":
                    self.send_response(401)
                    self.end_headers()
                    return
                user = USER
            access = []
            for scope in query.get("scope", []):
                kind, repository, actions = scope.split(":", 2)
                allowed = [a for a in actions.split(",") if a == "pull" or user]
                access.append({"type": kind, "name": repository, "actions": allowed})
            issued = int(time.time())
            claims = {"iss": ISSUER, "sub": user, "aud": SERVICE, "exp": issued + 300, "nbf": issued - 10,
                      "iat": issued, "jti": os.urandom(8).hex(), "access": access}  # fmt: skip
            head = _b64url(json.dumps({"typ": "JWT", "alg": "RS256", "x5c": [x5c]}).encode())
            body = _b64url(json.dumps(claims).encode())
            signature = key.sign(f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
            token = f"{head}.{body}.{_b64url(signature)}"
            payload = json.dumps({"token": token, "access_token": token, "expires_in": 300}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/token"
