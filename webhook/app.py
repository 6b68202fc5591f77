"""The Flask application: ``/validate`` (AdmissionReview v1), ``/healthz``, ``/readyz``, ``/metrics``.

Configured from the environment so that gunicorn (production) and ``kaudit webhook serve`` (development) build the
same application: ``KAUDIT_POLICY`` (a bundled policy name or a file), ``KAUDIT_REPORTS`` (the report store
directory).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from flask import Flask, Response, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from kaudit.errors import Error
from kaudit.policy.load import load_catalog, load_policy, resolve_policy
from webhook.attestations import AttestationSource
from webhook.review import Decision, Reviewer, response
from webhook.store import ReportStore

log = logging.getLogger("kaudit.webhook")
MAX_REQUEST_BYTES = 8 << 20
"""An AdmissionReview is bounded by etcd's 1.5 MiB object limit; anything far larger is not from an API server."""


def create_app(policy: str | None = None, reports: str | None = None) -> Flask:
    policy_name = policy or os.environ.get("KAUDIT_POLICY", "production")
    store_dir = reports or os.environ.get("KAUDIT_REPORTS", "/var/run/kaudit/reports")
    catalog = load_catalog()
    loaded = load_policy(resolve_policy(policy_name), catalog)
    reviewer = Reviewer(loaded, catalog, ReportStore(store_dir), AttestationSource.from_environment(loaded))
    registry = CollectorRegistry()
    requests_total = Counter("kaudit_admission_requests", "AdmissionReview requests", ["kind", "operation", "decision"],
                             registry=registry)  # fmt: skip
    latency = Histogram("kaudit_admission_latency_seconds", "Time to decide an AdmissionReview", registry=registry,
                        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))  # fmt: skip
    findings_total = Counter("kaudit_admission_findings", "Policy findings in admission decisions",
                             ["rule", "mode", "severity"], registry=registry)  # fmt: skip

    app = Flask("kaudit-webhook")
    app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES

    @app.post("/validate")
    def validate() -> tuple[Response, int]:
        started = time.perf_counter()
        try:
            review: Any = request.get_json(silent=True)
        except RecursionError:
            review = None
        if (not isinstance(review, dict) or review.get("apiVersion") != "admission.k8s.io/v1"
                or review.get("kind") != "AdmissionReview" or not isinstance(review.get("request"), dict)):  # fmt: skip
            return jsonify({"error": "expected an AdmissionReview admission.k8s.io/v1 with a request"}), 400
        admission = review["request"]
        kind_field = admission.get("kind")
        kind = str(kind_field.get("kind", "")) if isinstance(kind_field, dict) else ""
        obj = admission.get("object")
        metadata = obj.get("metadata") if isinstance(obj, dict) else None
        name = metadata.get("name") if isinstance(metadata, dict) else None
        try:
            if not isinstance(obj, dict):
                decision = Decision(False, message="kaudit judges objects: this AdmissionReview carries none")
            else:
                decision = reviewer.review(admission)
        except Exception:  # a bug must not let a pod through or hang the API server: deny, and say so
            log.exception("review failed for uid %s", admission.get("uid"))
            decision = Decision(False, message="kaudit could not review this object (an internal error, logged)")
        if not decision.allowed:
            log.info("denied %s %s/%s (uid %s, dryRun %s): %s", kind, admission.get("namespace"), name,
                     admission.get("uid"), bool(admission.get("dryRun")), decision.message)  # fmt: skip
        outcome = "exempt" if decision.exempt else "allowed" if decision.allowed else "denied"
        requests_total.labels(kind, str(admission.get("operation", "")), outcome).inc()
        for finding in decision.findings:
            findings_total.labels(finding.rule.id, finding.mode.value, finding.severity.value).inc()
        latency.observe(time.perf_counter() - started)
        return jsonify(response(admission, decision)), 200

    @app.get("/healthz")
    def healthz() -> tuple[str, int]:
        return "ok\n", 200

    @app.get("/readyz")
    def readyz() -> tuple[str, int]:
        if not os.path.isdir(reviewer.store.directory):
            return f"report store {reviewer.store.directory} is not mounted\n", 503
        return "ready\n", 200

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)

    return app


def main_app() -> Flask:
    """gunicorn's entry point (``webhook.app:main_app()``): configuration errors end the worker with a message."""
    try:
        return create_app()
    except Error as exc:
        raise SystemExit(f"kaudit webhook: {exc.diagnostics()}") from exc
