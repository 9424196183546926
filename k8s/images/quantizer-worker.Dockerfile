# The quantizer worker image: runs `python -m quantbias_assets.workers.quantize` in GPU pods.
# llmcompressor (with its CUDA torch) + this package without its orchestration dependencies.
# Build from the repository root:
#   docker build -f k8s/images/quantizer-worker.Dockerfile -t $REGISTRY/quantbias-quantizer-worker:$TAG .
FROM python:3.11.13-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --gid 1000 quantbias \
 && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/quantbias quantbias

WORKDIR /opt/quantbias
# torch==2.13.0 from PyPI on linux/amd64 is the CUDA build; constraints.txt pins the rest
# (llmcompressor 0.14.0.1 with compressed-tensors 0.19.0).
COPY pyproject.toml constraints.txt README.md ./
COPY k8s/images/select_requirements.py /tmp/select_requirements.py
RUN python /tmp/select_requirements.py pyproject.toml quantizer-worker > /tmp/requirements.txt \
 && pip install -c constraints.txt -r /tmp/requirements.txt

COPY definitions.py ./
COPY quantbias_assets ./quantbias_assets
COPY resources ./resources
RUN pip install --no-deps . \
 && python -c "import llmcompressor, dagster_pipes, quantbias_assets.workers.quantize"

USER 1000:1000
ENV HOME=/home/quantbias
CMD ["python", "-m", "quantbias_assets.workers.quantize"]
