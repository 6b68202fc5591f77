"""An apiserver-equivalent admission caller — not a kube-apiserver: none can run on these machines.

It does what kube-apiserver documents for validating admission webhooks, driven by the project's own
ValidatingWebhookConfiguration (deploy/base): it matches the webhook's ``rules`` (operations, API groups, versions,
resources and subresources, scope) and its ``namespaceSelector`` against the namespace's labels — with
``kubernetes.io/metadata.name`` set to the namespace's name as the API server sets it, whatever labels a user
adds — builds an AdmissionReview ``admission.k8s.io/v1``, POSTs it over HTTPS trusting only the configuration's
``caBundle``, applies ``timeoutSeconds`` and ``failurePolicy``, checks the response's ``apiVersion``, ``kind`` and
``uid``, and turns the answer into what a client of the API server would see.

The configuration's ``clientConfig.service`` is resolved to the URL of the test's gunicorn: the one thing a
cluster's DNS and kube-proxy would do.
"""

from __future__ import annotations

import base64
import copy
import ssl
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml

# kind → (group, version, resource) for the kinds the tests admit
RESOURCES = {
    "Pod": ("", "v1", "pods"),
    "Deployment": ("apps", "v1", "deployments"),
    "ReplicaSet": ("apps", "v1", "replicasets"),
    "StatefulSet": ("apps", "v1", "statefulsets"),
    "DaemonSet": ("apps", "v1", "daemonsets"),
    "Job": ("batch", "v1", "jobs"),
    "CronJob": ("batch", "v1", "cronjobs"),
    "InferenceService": ("serving.kserve.io", "v1beta1", "inferenceservices"),
    "ServingRuntime": ("serving.kserve.io", "v1alpha1", "servingruntimes"),
    "ConfigMap": ("", "v1", "configmaps"),
}


@dataclass
class Outcome:
    """What the API server tells its client."""

    allowed: bool
    called: bool
    """Whether the webhook was called at all (the rules and selectors matched)."""
    message: str = ""
    warnings: list[str] = field(default_factory=list)
    audit_annotations: dict[str, str] = field(default_factory=dict)


def _selector_matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


class ApiServer:
    def __init__(self, configuration: Path, url: str, ca_pem: bytes, *, timeout_s: float | None = None) -> None:
        document = yaml.safe_load(configuration.read_text())
        assert document["kind"] == "ValidatingWebhookConfiguration"
        self.webhooks = copy.deepcopy(document["webhooks"])
        for webhook in self.webhooks:
            webhook["clientConfig"]["caBundle"] = base64.b64encode(ca_pem).decode()
            if timeout_s is not None:
                webhook["timeoutSeconds"] = timeout_s
        self.url = url
        self.requests: list[dict[str, Any]] = []

    def admit(
        self,
        obj: dict[str, Any],
        namespace: str,
        namespace_labels: dict[str, str] | None = None,
        *,
        operation: str = "CREATE",
        subresource: str = "",
        dry_run: bool = False,
    ) -> Outcome:
        group, version, resource = RESOURCES[obj["kind"]]
        labels = {**(namespace_labels or {}), "kubernetes.io/metadata.name": namespace}
        warnings: list[str] = []
        audit: dict[str, str] = {}
        called = False
        for webhook in self.webhooks:
            if not self._matches(webhook, group, version, resource, subresource, operation, labels):
                continue
            called = True
            outcome = self._call(webhook, obj, namespace, group, version, resource, subresource, operation, dry_run)
            warnings += outcome.warnings
            audit.update(outcome.audit_annotations)
            if not outcome.allowed:
                return Outcome(False, True, outcome.message, warnings, audit)
        return Outcome(True, called, "", warnings, audit)

    def _matches(self, webhook: dict[str, Any], group: str, version: str, resource: str, subresource: str,
                 operation: str, labels: dict[str, str]) -> bool:  # fmt: skip
        name = f"{resource}/{subresource}" if subresource else resource
        for rule in webhook["rules"]:
            if (operation in rule["operations"] or "*" in rule["operations"]) and \
                    (group in rule["apiGroups"] or "*" in rule["apiGroups"]) and \
                    (version in rule["apiVersions"] or "*" in rule["apiVersions"]) and \
                    (name in rule["resources"] or "*" in rule["resources"]):  # fmt: skip
                return _selector_matches(webhook.get("namespaceSelector") or {}, labels)
        return False

    def _call(self, webhook: dict[str, Any], obj: dict[str, Any], namespace: str, group: str, version: str,
              resource: str, subresource: str, operation: str, dry_run: bool) -> Outcome:  # fmt: skip
        uid = str(uuid.uuid4())
        review = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": uid,
                "kind": {"group": group, "version": version, "kind": obj["kind"]},
                "resource": {"group": group, "version": version, "resource": resource},
                "subResource": subresource or None,
                "requestKind": {"group": group, "version": version, "kind": obj["kind"]},
                "requestResource": {"group": group, "version": version, "resource": resource},
                "name": obj.get("metadata", {}).get("name"),
                "namespace": namespace,
                "operation": operation,
                "userInfo": {"username": "system:serviceaccount:team:deployer", "groups": ["system:authenticated"]},
                "object": obj,
                "oldObject": obj if operation == "UPDATE" else None,
                "dryRun": dry_run,
                "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
            },
        }
        self.requests.append(review)
        path = webhook["clientConfig"]["service"].get("path", "/")
        with tempfile.NamedTemporaryFile("wb", suffix=".pem") as bundle:
            bundle.write(base64.b64decode(webhook["clientConfig"]["caBundle"]))
            bundle.flush()
            try:
                reply = requests.post(self.url + path, json=review, verify=bundle.name,
                                      timeout=webhook.get("timeoutSeconds", 10))  # fmt: skip
                reply.raise_for_status()
                answer = reply.json()
            except (requests.RequestException, ValueError, ssl.SSLError) as exc:
                return self._failed(webhook, f"failed calling webhook {webhook['name']}: {exc}")
        response = answer.get("response") or {}
        if answer.get("apiVersion") != "admission.k8s.io/v1" or answer.get("kind") != "AdmissionReview" \
                or response.get("uid") != uid:  # fmt: skip
            return self._failed(webhook, f"webhook {webhook['name']} answered with a mismatched AdmissionReview")
        message = ((response.get("status") or {}).get("message")) or ""
        if not response.get("allowed"):
            message = f'admission webhook "{webhook["name"]}" denied the request: {message}'
        audit = {f"{webhook['name']}/{k}": v for k, v in (response.get("auditAnnotations") or {}).items()}
        return Outcome(bool(response.get("allowed")), True, message, list(response.get("warnings") or []), audit)

    @staticmethod
    def _failed(webhook: dict[str, Any], message: str) -> Outcome:
        if webhook.get("failurePolicy", "Fail") == "Ignore":
            return Outcome(True, True, "", [], {})
        return Outcome(False, True, f"Internal error occurred: {message}")
