"""
Running unattended: the admin listener (health, readiness, metrics, the
migration report and its status page), the healthcheck probe, logs, and the
scope of a v1 request that logs and metrics read.
"""
