"""The kaudit validating admission webhook: a Flask application (``app.py``) served by gunicorn over TLS
(``gunicorn_conf.py``, ``tls.py``), deciding AdmissionReviews (``review.py``) with kaudit's policy engine and rules
over the admission reports in a report store (``store.py``). The kaudit library never imports this package.
"""
