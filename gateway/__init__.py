"""
acme-gateway: serve the ACME v1 API to legacy clients and translate every flow
into ACME v2 (RFC 8555) at a real upstream CA.

The folders are the layers (README, Architecture): `gateway.v1` (the face),
`gateway.translate` (request values, flows and the domain rules),
`gateway.upstream` (the ACME v2 client), `gateway.store`, `gateway.keys`,
`gateway.validation`, `gateway.operations`, `gateway.adopt` and
`gateway.clients`, and `gateway.process`, where they are put together.  The
top level holds only what every layer may use: `gateway.status`,
`gateway.web` and `gateway.crashpoints`.
"""

__version__ = "0.1.0"
