# syntax=docker/dockerfile:1
# The monitor image: redis, prometheus-client, gRPC and protobuf; no torch.
# Build from the repository root:  docker build -f docker/monitor.Dockerfile -t featurewatch-monitor .
FROM python:3.11-slim AS wheel
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY proto proto
COPY featurewatch featurewatch
COPY training training
COPY services services
# The build hook generates featurewatch/v1 from proto/ (grpcio-tools is a build requirement).
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# The distribution's dependencies include torch for training and inference; the monitor needs
# only these, so the wheel goes in without its dependencies.
RUN pip install --no-cache-dir "redis>=5.0" "prometheus-client>=0.20" "grpcio>=1.60" \
        "grpcio-health-checking>=1.60" "grpcio-reflection>=1.60" "protobuf>=4.25" \
        "pyyaml>=6" "click>=8.1" "rich>=13" "numpy>=1.26" "polars>=1.0"
COPY --from=wheel /wheels /wheels
RUN pip install --no-cache-dir --no-deps /wheels/*.whl && rm -rf /wheels \
    && python -c "import sys, featurewatch.services.monitor.server; assert 'torch' not in sys.modules"
USER 10001
EXPOSE 50052 9465
ENTRYPOINT ["featurewatch"]
CMD ["serve", "monitor"]
