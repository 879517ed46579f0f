# syntax=docker/dockerfile:1
# The inference image: CPU torch + transformers, the gRPC service.
# Build from the repository root:  docker build -f docker/inference.Dockerfile -t featurewatch-inference .
FROM python:3.11-slim AS wheel
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY proto proto
COPY featurewatch featurewatch
COPY training training
COPY services services
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/tmp
# The CPU build of the pinned torch first, so the wheel's torch==2.13.0 is already satisfied.
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY --from=wheel /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 10001
EXPOSE 50051 9464
ENTRYPOINT ["featurewatch"]
CMD ["serve", "inference", "--model", "/artifacts/model"]
