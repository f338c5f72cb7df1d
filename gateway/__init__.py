"""
acme-gateway: serve the ACME v1 API to legacy clients and translate every flow
into ACME v2 (RFC 8555) at a real upstream CA.

The package is split into pure protocol code (message shapes, JWS, problem
documents, identifier policy) and the I/O at its edges (the v1 web resource,
the upstream client on treq, the SQLite store, the key store on disk).
"""

__version__ = "0.1.0"
