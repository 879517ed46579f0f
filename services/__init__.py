"""featurewatch services: gRPC inference and the Redis-backed monitor."""
