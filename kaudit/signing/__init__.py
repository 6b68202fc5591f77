"""Signatures: Sigstore bundles verified offline against a trust root (``trust.py``), Kernel Hub variant
signatures (``hub.py``), and signed manifests of kernel cache directories (``cache.py``)."""
