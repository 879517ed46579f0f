# syntax=docker/dockerfile:1
# The training-job image: CPU torch (bf16 autocast on AMX CPUs), the whole training chain.
# Build from the repository root:  docker build -f docker/training.Dockerfile -t featurewatch-training .
FROM python:3.11-slim AS wheel
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY proto proto
COPY featurewatch featurewatch
COPY training training
COPY services services
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/tmp MPLCONFIGDIR=/tmp/matplotlib
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY --from=wheel /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 10001
WORKDIR /artifacts
ENTRYPOINT ["featurewatch"]
CMD ["train", "all", "--preset", "default", "--artifacts", "/artifacts"]
