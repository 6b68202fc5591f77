"""gunicorn settings for the webhook: ``gunicorn -c python:webhook.gunicorn_conf 'webhook.app:main_app()'``.

TLS comes from ``KAUDIT_TLS_CERT``/``KAUDIT_TLS_KEY`` (default: the Secret mounted at /etc/kaudit/tls) and follows
certificate rotation (:mod:`webhook.tls`). One worker with threads: the policy and report store are loaded once,
and the Prometheus metrics are that process's.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable
from typing import Any

from webhook.tls import ReloadingContext

bind = os.environ.get("KAUDIT_BIND", "0.0.0.0:8443")
certfile = os.environ.get("KAUDIT_TLS_CERT", "/etc/kaudit/tls/tls.crt")
keyfile = os.environ.get("KAUDIT_TLS_KEY", "/etc/kaudit/tls/tls.key")
workers = 1
worker_class = "gthread"
threads = int(os.environ.get("KAUDIT_THREADS", "8"))
timeout = 30
graceful_timeout = 10
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("KAUDIT_LOG_LEVEL", "info")
worker_tmp_dir = os.environ.get("KAUDIT_WORKER_TMP", "/dev/shm" if os.path.isdir("/dev/shm") else None)


def ssl_context(config: Any, default_ssl_context_factory: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    return ReloadingContext(config.certfile, config.keyfile).current
