"""Admission latency of the webhook as the API server sees it: gunicorn over TLS, one HTTPS POST per AdmissionReview.

Usage::

    python benchmarks/webhook_latency.py [--requests 500] [--report REPORT.json]

Starts the webhook (``gunicorn -c python:webhook.gunicorn_conf``) with a self-signed certificate, the production
policy and a report store holding one admission report (``--report``: an ``-o admission`` file; by default the
bundled example scanned as an image-less report is not enough, so one is made by scanning the example rootfs with
``dir:``), then sends Pod AdmissionReviews whose image names that report's digest over a kept-alive HTTPS
connection, and prints p50/p90/p99/max in milliseconds for an allowed and a denied pod.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kaudit.formats.admission import AdmissionFormat
from kaudit.image_scan import ImageScanOptions, scan_image
from kaudit.inventory import ImageInfo

ROOT = Path(__file__).resolve().parents[1]
DIGEST = "sha256:" + "ab" * 32


def _certificate(directory: Path) -> None:
    """A CA (``ca.crt``, what the API server's caBundle would hold) and the serving pair it signs."""
    now = datetime.datetime.now(datetime.UTC)

    def build(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, signer: ec.EllipticCurvePrivateKey,
              ca: bool) -> x509.Certificate:  # fmt: skip
        builder = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(issuer).public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=1))
                   .not_valid_after(now + datetime.timedelta(hours=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))  # fmt: skip
        if not ca:
            san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
            builder = builder.add_extension(san, critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = build("kaudit bench CA", ca_key, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kaudit bench CA")]),
               ca_key, True)  # fmt: skip
    leaf = build("127.0.0.1", key, ca.subject, ca_key, False)
    (directory / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (directory / "tls.crt").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (directory / "tls.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))  # fmt: skip


def _quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--report", type=Path, help="an admission report (default: the example rootfs)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kaudit-webhook-bench-"))
    store = work / "reports"
    store.mkdir()
    if args.report:
        text = args.report.read_text()
        digest = json.loads(text)["report"]["image"]["manifest_digest"]
    else:
        report = scan_image(f"dir:{ROOT / 'examples' / 'inference-rootfs'}", ImageScanOptions())
        report = replace(report, image=ImageInfo("registry.example.com/demo:1", DIGEST, "linux/amd64", ()))
        text, digest = AdmissionFormat().render(report), DIGEST
    (store / f"sha256-{digest.split(':')[1]}.json").write_text(text)
    _certificate(work)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"https://127.0.0.1:{port}"
    env = {**os.environ, "KAUDIT_BIND": f"127.0.0.1:{port}", "KAUDIT_TLS_CERT": str(work / "tls.crt"),
           "KAUDIT_TLS_KEY": str(work / "tls.key"), "KAUDIT_POLICY": "production", "KAUDIT_REPORTS": str(store),
           "KAUDIT_WORKER_TMP": str(work), "KAUDIT_LOG_LEVEL": "warning"}  # fmt: skip
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "python:webhook.gunicorn_conf",
                               "--access-logfile", "/dev/null", "webhook.app:main_app()"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    session = requests.Session()
    ca = str(work / "ca.crt")  # per request: requests lets REQUESTS_CA_BUNDLE override a session's verify
    try:
        for _ in range(100):
            try:
                session.get(url + "/healthz", timeout=1, verify=ca)
                break
            except requests.RequestException:
                time.sleep(0.1)
        print("| pod | requests | p50 (ms) | p90 (ms) | p99 (ms) | max (ms) | decision |")
        print("|---|---:|---:|---:|---:|---:|---|")
        for label, image in (("digest with a report", f"registry.example.com/demo@{digest}"),
                             ("tag (denied without lookup)", "registry.example.com/demo:1")):  # fmt: skip
            review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
                "uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "namespace": "team",
                "operation": "CREATE", "object": {"kind": "Pod", "spec": {"containers": [
                    {"name": "server", "image": image}]}}}}  # fmt: skip
            timings = []
            allowed = None
            for _ in range(args.requests):
                started = time.perf_counter()
                answer = session.post(url + "/validate", json=review, timeout=10, verify=ca).json()
                timings.append((time.perf_counter() - started) * 1000)
                allowed = answer["response"]["allowed"]
            timings.sort()
            decision = "allowed" if allowed else "denied"
            print(f"| {label} | {len(timings)} | {statistics.median(timings):.2f} | {_quantile(timings, 0.9):.2f} | "
                  f"{_quantile(timings, 0.99):.2f} | {timings[-1]:.2f} | {decision} |")  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
