"""
The ACME v1 face: the resource tree at Boulder's paths, the wrapper every
request crosses (nonces, request ids, problem documents, logs, metrics, the
report), JWS verification, v1 messages, nonces and the body limit.
"""
