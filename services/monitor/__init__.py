"""The monitor service: trace events → Redis aggregates → Prometheus metrics and alerts.

Nothing under this package imports torch (it runs in a small image next to Redis).
"""
