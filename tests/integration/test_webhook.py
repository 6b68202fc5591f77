"""The admission webhook end to end: gunicorn serving the real Flask app over real TLS, called by the
apiserver-equivalent caller (tests/apiserver.py — not a kube-apiserver, which cannot run here) that follows the
project's own ValidatingWebhookConfiguration, with a report store written by ``kaudit scan image -o admission``.
"""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.apiserver import ApiServer
from tests.conftest import ROOT
from tests.imagebuild import BuiltImage, build_layout
from tests.integration.test_policy_gate import failing_layers, passing_layers
from tests.registry import Registry, free_port

CONFIGURATION = ROOT / "deploy" / "base" / "validatingwebhookconfiguration.yaml"
POLICY = """apiVersion: kaudit.dev/v1
kind: Policy
name: webhook-test
fleet:
  archs: [sm_80]
registries: ["{registry}"]
defaults:
  mode: enforce
  fail-on: high
rules:
  KA201: {{mode: warn}}
  KA203: {{mode: audit}}
admission:
  exempt-namespaces: [kube-system, kaudit-system, team-exempt]
  missing-report: enforce
"""


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def make_ca(name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name)).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))  # fmt: skip
    return key, cert


def write_server_pair(ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate], directory: Path) -> x509.Certificate:
    ca_key, ca_cert = ca
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    names = [x509.DNSName("kaudit-webhook.kaudit-system.svc"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (x509.CertificateBuilder().subject_name(_name("kaudit-webhook.kaudit-system.svc"))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .sign(ca_key, hashes.SHA256()))  # fmt: skip
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())  # fmt: skip
    # the key first, then the certificate: a reader that sees the new certificate sees its key too
    (directory / "tls.key.new").write_bytes(key_pem)
    (directory / "tls.crt.new").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.replace(directory / "tls.key.new", directory / "tls.key")
    os.replace(directory / "tls.crt.new", directory / "tls.crt")
    return cert


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory, registry: Registry) -> dict[str, BuiltImage]:
    work = tmp_path_factory.mktemp("webhook-images")
    good = build_layout(work / "good", passing_layers(), env={"HF_HUB_OFFLINE": "1"})
    bad = build_layout(work / "bad", failing_layers())
    registry.push(good.layout, "v1", "kaudit/good")
    registry.push(bad.layout, "v1", "kaudit/bad")
    return {"good": good, "bad": bad}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, images: dict[str, BuiltImage], registry: Registry) -> Path:
    directory = tmp_path_factory.mktemp("reports")
    for name, image in images.items():
        target = directory / f"sha256-{image.manifest_digest.split(':')[1]}.json"
        run = subprocess.run([sys.executable, "-m", "kaudit", "scan", "image", f"{registry.host}/kaudit/{name}:v1",
                              "--insecure-registry", registry.host, "--no-cache", "-o", f"admission={target}"],
                             capture_output=True, text=True, timeout=300)  # fmt: skip
        assert run.returncode == 0, run.stderr
    return directory


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory = tmp_path_factory.mktemp("tls")
    ca = make_ca("kaudit test webhook CA")
    write_server_pair(ca, directory)
    return {"dir": directory, "ca": ca, "ca_pem": ca[1].public_bytes(serialization.Encoding.PEM)}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, store: Path, tls: dict[str, Any],
           registry: Registry) -> Iterator[dict[str, Any]]:  # fmt: skip
    work = tmp_path_factory.mktemp("webhook")
    policy = work / "policy.yaml"
    policy.write_text(POLICY.format(registry=registry.host))
    port = free_port()
    log = (work / "gunicorn.log").open("w")
    env = {**os.environ, "KAUDIT_BIND": f"127.0.0.1:{port}", "KAUDIT_TLS_CERT": str(tls["dir"] / "tls.crt"),
           "KAUDIT_TLS_KEY": str(tls["dir"] / "tls.key"), "KAUDIT_POLICY": str(policy), "KAUDIT_REPORTS": str(store),
           "KAUDIT_WORKER_TMP": str(work)}  # fmt: skip
    command = [sys.executable, "-m", "gunicorn", "-c", "python:webhook.gunicorn_conf", "webhook.app:main_app()"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"https://127.0.0.1:{port}"
    ca_file = work / "ca.crt"
    ca_file.write_bytes(tls["ca_pem"])
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(url + "/healthz", verify=str(ca_file), timeout=2).ok:
                break
        except requests.RequestException:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            log.close()
            pytest.fail("gunicorn did not start: " + (work / "gunicorn.log").read_text()[-3000:])
        time.sleep(0.2)
    yield {"url": url, "ca_file": ca_file, "log": work / "gunicorn.log", "port": port}
    process.terminate()
    process.wait(timeout=15)
    log.close()


@pytest.fixture(scope="module")
def apiserver(server: dict[str, Any], tls: dict[str, Any]) -> ApiServer:
    return ApiServer(CONFIGURATION, server["url"], tls["ca_pem"])


def _ref(registry: Registry, images: dict[str, BuiltImage], name: str) -> str:
    return f"{registry.host}/kaudit/{name}@{images[name].manifest_digest}"


def pod(image: str, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "server", "image": image}], **extra}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "team"}, "spec": spec}


def workload(kind: str, image: str) -> dict[str, Any]:
    template = {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "server", "image": image}]}}
    spec: dict[str, Any] = {"selector": {"matchLabels": {"app": "x"}}, "template": template}
    if kind == "Job":
        spec = {"template": template}
    if kind == "CronJob":
        spec = {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template}}}
    if kind == "InferenceService":
        spec = {"predictor": {"containers": [{"name": "kserve-container", "image": image}]}}
    if kind == "ServingRuntime":
        spec = {"supportedModelFormats": [{"name": "pytorch"}], "containers": [{"name": "kserve-container",
                                                                               "image": image}]}  # fmt: skip
    api = {"Deployment": "apps/v1", "ReplicaSet": "apps/v1", "StatefulSet": "apps/v1", "DaemonSet": "apps/v1",
           "Job": "batch/v1", "CronJob": "batch/v1", "InferenceService": "serving.kserve.io/v1beta1",
           "ServingRuntime": "serving.kserve.io/v1alpha1"}[kind]  # fmt: skip
    return {"apiVersion": api, "kind": kind, "metadata": {"name": "w", "namespace": "team"}, "spec": spec}


def test_a_clean_pinned_image_is_admitted(apiserver: ApiServer, registry: Registry,
                                          images: dict[str, BuiltImage]) -> None:  # fmt: skip
    outcome = apiserver.admit(pod(_ref(registry, images, "good")), "team")
    assert outcome.called and outcome.allowed, outcome.message
    assert outcome.warnings == []


def test_a_bad_image_is_denied_with_every_violation(apiserver: ApiServer, registry: Registry,
                                                    images: dict[str, BuiltImage]) -> None:  # fmt: skip
    outcome = apiserver.admit(pod(_ref(registry, images, "bad")), "team")
    assert not outcome.allowed and 'admission webhook "pods.kaudit.dev" denied the request' in outcome.message
    for rule in ("KA303", "KA202", "KA301", "KA501"):
        assert rule in outcome.message, rule
    assert "spec.containers[server]" in outcome.message and "opt/app/kern_sm_90a.cubin" in outcome.message
    assert "Fix: rebuild for sm_80" in outcome.message
    # warn- and audit-mode rules do not deny: KA201 comes back as a warning, KA203 as an audit annotation
    assert any(w.startswith("KA201") for w in outcome.warnings) and all(len(w) <= 120 for w in outcome.warnings)


def test_a_tag_is_denied_with_the_digest_to_use(apiserver: ApiServer, registry: Registry,
                                                images: dict[str, BuiltImage]) -> None:  # fmt: skip
    outcome = apiserver.admit(pod(f"{registry.host}/kaudit/good:v1"), "team")
    assert not outcome.allowed and "KA101" in outcome.message
    assert f"reference the image as {registry.host}/kaudit/good@{images['good'].manifest_digest}" in outcome.message


@pytest.mark.parametrize("where", ["initContainers", "ephemeralContainers"])
def test_side_containers_are_judged(apiserver: ApiServer, registry: Registry, images: dict[str, BuiltImage],
                                    where: str) -> None:  # fmt: skip
    obj = pod(_ref(registry, images, "good"), **{where: [{"name": "side", "image": _ref(registry, images, "bad")}]})
    subresource = "ephemeralcontainers" if where == "ephemeralContainers" else ""
    outcome = apiserver.admit(obj, "team", operation="UPDATE" if subresource else "CREATE", subresource=subresource)
    assert outcome.called and not outcome.allowed and f"spec.{where}[side]" in outcome.message


def test_tag_and_digest_is_judged_by_the_digest(apiserver: ApiServer, registry: Registry,
                                                images: dict[str, BuiltImage]) -> None:  # fmt: skip
    sneaky = f"{registry.host}/kaudit/good:v1@{images['bad'].manifest_digest}"
    outcome = apiserver.admit(pod(sneaky), "team")
    assert not outcome.allowed and "KA303" in outcome.message


def test_a_second_registry_is_refused(apiserver: ApiServer, images: dict[str, BuiltImage]) -> None:
    outcome = apiserver.admit(pod(f"mirror.example.org/kaudit/good@{images['good'].manifest_digest}"), "team")
    assert not outcome.allowed and "KA102" in outcome.message and "mirror.example.org" in outcome.message


@pytest.mark.parametrize("kind", ["Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "CronJob",
                                  "InferenceService", "ServingRuntime"])  # fmt: skip
def test_every_workload_template_is_judged(apiserver: ApiServer, registry: Registry, images: dict[str, BuiltImage],
                                           kind: str) -> None:  # fmt: skip
    denied = apiserver.admit(workload(kind, _ref(registry, images, "bad")), "team")
    assert denied.called and not denied.allowed and "KA303" in denied.message, kind
    allowed = apiserver.admit(workload(kind, _ref(registry, images, "good")), "team", operation="UPDATE")
    assert allowed.called and allowed.allowed, allowed.message


def test_namespaces(apiserver: ApiServer, registry: Registry, images: dict[str, BuiltImage],
                    server: dict[str, Any]) -> None:  # fmt: skip
    bad = pod(_ref(registry, images, "bad"))
    # labels a user can set do not exempt: the selector keys on the name the API server sets
    claims = apiserver.admit(bad, "team", {"kubernetes.io/metadata.name": "kube-system", "kaudit.dev/exempt": "true"})
    assert claims.called and not claims.allowed
    skipped = apiserver.admit(bad, "kube-system")
    assert skipped.allowed and not skipped.called
    exempt = apiserver.admit(bad, "team-exempt")
    assert exempt.called and exempt.allowed and "namespace team-exempt is exempt" in str(exempt.audit_annotations)
    time.sleep(0.2)
    assert "admitted without review: namespace team-exempt is exempt" in server["log"].read_text()


def test_annotations_claiming_a_scan_result_change_nothing(apiserver: ApiServer, registry: Registry,
                                                           images: dict[str, BuiltImage]) -> None:  # fmt: skip
    obj = pod(_ref(registry, images, "bad"))
    obj["metadata"]["annotations"] = {"kaudit.dev/scan-result": "pass", "kaudit.dev/exempt": "true"}
    assert not apiserver.admit(obj, "team").allowed


def test_an_image_without_a_report_is_denied(apiserver: ApiServer, registry: Registry) -> None:
    outcome = apiserver.admit(pod(f"{registry.host}/kaudit/unknown@sha256:{'0' * 64}"), "team")
    assert not outcome.allowed and "no kaudit scan report" in outcome.message and "-o admission=" in outcome.message


def test_pod_level_signals(apiserver: ApiServer, registry: Registry, images: dict[str, BuiltImage]) -> None:
    good = _ref(registry, images, "good")
    env = pod(good)
    env["spec"]["containers"][0]["env"] = [{"name": "LOCAL_KERNELS", "value": "kaudit-test/saxpy=/mnt/k"},
                                           {"name": "HF_HUB_OFFLINE", "value": "0"}]  # fmt: skip
    outcome = apiserver.admit(env, "team")
    assert not outcome.allowed and outcome.message.count("KA601") == 2
    shared = pod(good, volumes=[{"name": "cache", "persistentVolumeClaim": {"claimName": "triton"}}])
    shared["spec"]["containers"][0]["volumeMounts"] = [{"name": "cache", "mountPath": "/root/.triton/cache"}]
    outcome = apiserver.admit(shared, "team")
    assert outcome.allowed and any(w.startswith("KA602") for w in outcome.warnings)  # medium: a warning
    # the good image has SASS for sm_80 and PTX for compute_80: an H100 JIT-compiles it (a warning), a T4 cannot run it
    hopper = apiserver.admit(pod(good, nodeSelector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}), "team")
    assert hopper.allowed and any(w.startswith("KA604 spec.containers[server]:") and "sm_90" in w
                                  for w in hopper.warnings), hopper.warnings  # fmt: skip
    turing = apiserver.admit(pod(good, nodeSelector={"nvidia.com/gpu.product": "Tesla-T4"}), "team")
    assert not turing.allowed and "KA603" in turing.message and "sm_75" in turing.message
    ampere = apiserver.admit(pod(good, affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "nvidia.com/gpu.compute.major", "operator": "In",
                                                     "values": ["8"]}]}]}}}), "team")  # fmt: skip
    assert ampere.allowed, ampere.message


def test_dry_run_gets_the_same_answer(apiserver: ApiServer, registry: Registry, images: dict[str, BuiltImage]) -> None:
    bad = pod(_ref(registry, images, "bad"))
    assert apiserver.admit(bad, "team", dry_run=True).message == apiserver.admit(bad, "team").message


def test_objects_the_configuration_does_not_name_are_not_sent(apiserver: ApiServer) -> None:
    outcome = apiserver.admit({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}, "team")
    assert outcome.allowed and not outcome.called


def test_health_readiness_metrics_and_bad_requests(server: dict[str, Any], apiserver: ApiServer) -> None:
    url, ca = server["url"], str(server["ca_file"])
    assert requests.get(url + "/healthz", verify=ca, timeout=5).text == "ok\n"
    assert requests.get(url + "/readyz", verify=ca, timeout=5).status_code == 200
    metrics = requests.get(url + "/metrics", verify=ca, timeout=5).text
    assert 'kaudit_admission_requests_total{decision="denied",kind="Pod",operation="CREATE"}' in metrics
    assert 'kaudit_admission_findings_total{mode="enforce",rule="KA303",severity="critical"}' in metrics
    assert "kaudit_admission_latency_seconds_bucket" in metrics
    odd = [
        {"uid": "u", "kind": "Pod", "object": {"kind": "Pod", "metadata": None, "spec": {}}},
        {"uid": "u", "kind": {"kind": "Pod"}, "object": None},
        {"uid": "u", "object": [1, 2]},
    ]
    for request in odd:  # malformed requests are denied with a reason, never a 500
        review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
        reply = requests.post(url + "/validate", json=review, verify=ca, timeout=5)
        assert reply.status_code == 200 and reply.json()["response"]["uid"] == "u", reply.text
    nested = b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": ' + b"[" * 100000
    for body in (b"not json", b"{}", json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}),
                 nested):  # fmt: skip
        reply = requests.post(url + "/validate", data=body, verify=ca, timeout=5,
                              headers={"Content-Type": "application/json"})  # fmt: skip
        assert reply.status_code == 400 and "AdmissionReview" in reply.json()["error"]
    # a body far over an API server's object size is refused from its Content-Length, before it is read
    connection = http.client.HTTPSConnection("127.0.0.1", server["port"], timeout=10,
                                             context=ssl.create_default_context(cafile=ca))  # fmt: skip
    connection.putrequest("POST", "/validate")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", str(9 << 20))
    connection.endheaders()
    assert connection.getresponse().status == 413
    connection.close()


def _served_serial(port: int, ca_file: Path) -> int:
    context = ssl.create_default_context(cafile=str(ca_file))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="kaudit-webhook.kaudit-system.svc") as tls_socket:  # fmt: skip
        der = tls_socket.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_tls_trusts_only_the_ca_bundle_and_follows_rotation(
    server: dict[str, Any], tls: dict[str, Any], registry: Registry, images: dict[str, BuiltImage]
) -> None:
    foreign = make_ca("someone else's CA")
    stranger = ApiServer(CONFIGURATION, server["url"], foreign[1].public_bytes(serialization.Encoding.PEM))
    outcome = stranger.admit(pod(_ref(registry, images, "good")), "team")
    assert not outcome.allowed and "failed calling webhook" in outcome.message  # failurePolicy: Fail
    before = _served_serial(server["port"], server["ca_file"])
    rotated = write_server_pair(tls["ca"], tls["dir"])
    after = _served_serial(server["port"], server["ca_file"])
    assert before != after == rotated.serial_number  # the same gunicorn, no restart
    assert ApiServer(CONFIGURATION, server["url"], tls["ca_pem"]).admit(pod(_ref(registry, images, "good")),
                                                                         "team").allowed  # fmt: skip


def test_timeout_and_failure_policy(tls: dict[str, Any], registry: Registry, images: dict[str, BuiltImage]) -> None:
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"https://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        outcome = ApiServer(CONFIGURATION, url, tls["ca_pem"], timeout_s=1).admit(pod(_ref(registry, images, "good")),
                                                                                   "team")  # fmt: skip
        assert time.monotonic() - started < 5
    assert not outcome.allowed and "failed calling webhook" in outcome.message


def test_kaudit_webhook_serve_is_the_same_application(
    tmp_path: Path, store: Path, tls: dict[str, Any], registry: Registry, images: dict[str, BuiltImage]
) -> None:
    port = free_port()
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.format(registry=registry.host))
    process = subprocess.Popen([sys.executable, "-m", "kaudit", "webhook", "serve", "--policy", str(policy),
                                "--reports", str(store), "--port", str(port), "--cert", str(tls["dir"] / "tls.crt"),
                                "--key", str(tls["dir"] / "tls.key")], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        url = f"https://127.0.0.1:{port}"
        caller = ApiServer(CONFIGURATION, url, tls["ca_pem"])
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, "kaudit webhook serve did not start"
                time.sleep(0.2)
        assert caller.admit(pod(_ref(registry, images, "good")), "team").allowed
        denied = caller.admit(pod(_ref(registry, images, "bad")), "team")
        assert not denied.allowed and "KA303" in denied.message
    finally:
        process.terminate()
        process.wait(timeout=10)
    refused = subprocess.run([sys.executable, "-m", "kaudit", "webhook", "serve", "--reports", str(tmp_path / "no")],
                             capture_output=True, text=True)  # fmt: skip
    assert refused.returncode == 2 and "is not a directory" in refused.stderr
