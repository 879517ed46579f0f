"""The gRPC inference service: generation with per-token sparse feature traces, and steering."""
