"""The kaudit validating admission webhook (Flask, served by gunicorn over TLS).

It reuses kaudit's inventory and rules; the library never imports this package. The application itself arrives
with the webhook work: until then this package holds nothing to run.
"""
