"""TLS that follows certificate rotation without a restart.

cert-manager, OpenShift's service CA and the bare-cluster script all renew the serving certificate in place (a
mounted Secret is updated by the kubelet). Each TLS handshake's SNI callback checks the files' modification times
and, when they changed, serves a context built from the new files; a pair that does not load (half written) keeps
the previous one.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading

log = logging.getLogger("kaudit.webhook")


class ReloadingContext:
    def __init__(self, certfile: str, keyfile: str) -> None:
        self.certfile, self.keyfile = certfile, keyfile
        self._lock = threading.Lock()
        self._stamp = self._stamps()
        self.current = self._build()
        """The context gunicorn wraps sockets with; its callback switches each handshake to the serving one."""
        self._serving = self.current

    def _stamps(self) -> tuple[float, float]:
        return os.stat(self.certfile).st_mtime, os.stat(self.keyfile).st_mtime

    def _build(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.certfile, self.keyfile)
        context.sni_callback = self._on_handshake
        return context

    def _on_handshake(self, sock: ssl.SSLObject | ssl.SSLSocket, name: str | None, _: ssl.SSLContext) -> None:
        try:
            stamp = self._stamps()
        except OSError:
            return
        with self._lock:
            if stamp != self._stamp:
                try:
                    self._serving = self._build()
                except (OSError, ssl.SSLError) as exc:
                    log.warning("TLS: new certificate files do not load yet (%s); serving the previous pair", exc)
                    return
                self._stamp = stamp
                log.info("TLS: serving the rotated certificate %s", self.certfile)
            serving = self._serving
        if sock.context is not serving:
            sock.context = serving
