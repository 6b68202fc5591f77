"""deploy/: the kustomize base and overlays render (kubectl's built-in kustomize) and validate against the
Kubernetes schemas (PyPI ``kubernetes-validate``); the bare-cluster script makes a working certificate pair and
sets the caBundle; the manifests keep the properties the webhook's safety depends on."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.conftest import ROOT, missing_tool

KUBERNETES = "1.33"
OVERLAYS = ["base", "overlays/cert-manager", "overlays/openshift"]


def render(target: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        missing_tool("kubectl (its built-in kustomize renders deploy/)")
    result = subprocess.run([kubectl, "kustomize", str(ROOT / "deploy" / target)], capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.mark.parametrize("target", OVERLAYS)
def test_manifests_validate_against_the_kubernetes_schemas(target: str) -> None:
    documents = render(target)
    kinds = {doc["kind"] for doc in documents}
    assert {"Namespace", "ServiceAccount", "Deployment", "PodDisruptionBudget", "Service",
            "ValidatingWebhookConfiguration"} <= kinds  # fmt: skip
    for doc in documents:
        if doc["apiVersion"].startswith("cert-manager.io/"):
            continue  # a CRD: kubernetes-validate has only the core schemas; checked below
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def _by_kind(documents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in documents}


def test_the_base_keeps_its_safety_properties() -> None:
    docs = _by_kind(render("base"))
    (webhook,) = docs["ValidatingWebhookConfiguration"]["webhooks"]
    assert webhook["failurePolicy"] == "Fail" and webhook["sideEffects"] == "None"
    assert 1 <= webhook["timeoutSeconds"] <= 30 and webhook["admissionReviewVersions"] == ["v1"]
    (expression,) = webhook["namespaceSelector"]["matchExpressions"]
    assert expression == {"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                          "values": ["kube-system", "kaudit-system"]}  # fmt: skip
    resources = {r for rule in webhook["rules"] for r in rule["resources"]}
    assert {"pods", "pods/ephemeralcontainers", "deployments", "replicasets", "statefulsets", "daemonsets", "jobs",
            "cronjobs", "inferenceservices", "servingruntimes"} <= resources  # fmt: skip
    assert all(set(rule["operations"]) == {"CREATE", "UPDATE"} for rule in webhook["rules"])
    deployment = docs["Deployment"]["spec"]
    pod = deployment["template"]["spec"]
    (container,) = pod["containers"]
    assert deployment["replicas"] == 2 and pod["securityContext"]["runAsNonRoot"] is True
    assert (
        pod["automountServiceAccountToken"] is False and docs["ServiceAccount"]["automountServiceAccountToken"] is False
    )
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz" and container["resources"]["limits"]["memory"]
    assert pod["affinity"]["podAntiAffinity"]
    assert docs["PodDisruptionBudget"]["spec"]["minAvailable"] == 1
    assert all(m.get("readOnly") for m in container["volumeMounts"] if m["name"] in ("tls", "reports"))
    assert {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"}.isdisjoint(docs)


def test_cert_manager_overlay() -> None:
    docs = _by_kind(render("overlays/cert-manager"))
    certificate = docs["Certificate"]["spec"]
    assert certificate["secretName"] == "kaudit-webhook-tls"
    assert "kaudit-webhook.kaudit-system.svc" in certificate["dnsNames"]
    assert certificate["issuerRef"]["name"] == docs["Issuer"]["metadata"]["name"]
    annotations = docs["ValidatingWebhookConfiguration"]["metadata"]["annotations"]
    assert annotations["cert-manager.io/inject-ca-from"] == "kaudit-system/kaudit-webhook"


def test_openshift_overlay() -> None:
    docs = _by_kind(render("overlays/openshift"))
    assert docs["Service"]["metadata"]["annotations"]["service.beta.openshift.io/serving-cert-secret-name"] == \
        "kaudit-webhook-tls"  # fmt: skip
    assert docs["ValidatingWebhookConfiguration"]["metadata"]["annotations"][
        "service.beta.openshift.io/inject-cabundle"] == "true"  # fmt: skip
    security = docs["Deployment"]["spec"]["template"]["spec"]["securityContext"]
    assert "runAsUser" not in security and security["runAsNonRoot"] is True


def test_bare_cluster_script(tmp_path: Path) -> None:
    out = tmp_path / "ca"
    run = subprocess.run(["bash", str(ROOT / "deploy" / "bare-cluster-ca.sh"), "--dry-run", str(out)],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(out / "ca.crt"), str(out / "tls.crt")],
                            capture_output=True, text=True)  # fmt: skip
    assert verify.returncode == 0, verify.stderr
    names = subprocess.run(["openssl", "x509", "-in", str(out / "tls.crt"), "-noout", "-ext", "subjectAltName"],
                           capture_output=True, text=True).stdout  # fmt: skip
    assert "DNS:kaudit-webhook.kaudit-system.svc" in names
    configuration = yaml.safe_load((out / "validatingwebhookconfiguration.yaml").read_text())
    kubernetes_validate.validate(configuration, KUBERNETES, strict=True)
    bundle = configuration["webhooks"][0]["clientConfig"]["caBundle"]
    assert base64.b64decode(bundle) == (out / "ca.crt").read_bytes()
