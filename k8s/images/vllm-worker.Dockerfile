# The vLLM worker image: runs `python -m quantbias_assets.workers.respond` and `...workers.judge`
# in GPU pods. CUDA vLLM + this package without its orchestration dependencies (no dagster, no dbt).
# Build from the repository root:
#   docker build -f k8s/images/vllm-worker.Dockerfile -t $REGISTRY/quantbias-vllm-worker:$TAG .
FROM python:3.11.13-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Triton compiles a small C launcher at first use.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 1000 quantbias \
 && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/quantbias quantbias

# The CUDA vLLM wheel pins its own torch (2.14.0) and compressed-tensors (0.17.0), which is why it
# has this image to itself and why constraints.txt (torch 2.13.0, for llmcompressor) is not used here.
RUN pip install vllm==0.33.0

WORKDIR /opt/quantbias
COPY pyproject.toml README.md ./
COPY k8s/images/select_requirements.py /tmp/select_requirements.py
RUN python /tmp/select_requirements.py pyproject.toml vllm-worker > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt vllm==0.33.0

COPY definitions.py ./
COPY quantbias_assets ./quantbias_assets
COPY resources ./resources
RUN pip install --no-deps . \
 && python -c "import vllm, dagster_pipes, quantbias_assets.workers.respond, quantbias_assets.workers.judge"

USER 1000:1000
ENV HOME=/home/quantbias
# The pod's command (set by K8sWorkerLauncher) picks the worker.
CMD ["python", "-m", "quantbias_assets.workers.respond"]
