# The orchestrator image: Dagster code location (user code deployment) and the run pods it launches.
# dagster + dbt + this package, no torch and no model libraries. Build from the repository root:
#   docker build -f k8s/images/orchestrator.Dockerfile -t $REGISTRY/quantbias-orchestrator:$TAG .
FROM python:3.11.13-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --gid 1000 quantbias \
 && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/quantbias quantbias

WORKDIR /opt/quantbias
# Dependencies first (cached layer): the base and the `orchestrator` and `postgres` extras, no torch/transformers.
COPY pyproject.toml constraints.txt README.md ./
COPY k8s/images/select_requirements.py /tmp/select_requirements.py
RUN python /tmp/select_requirements.py pyproject.toml orchestrator > /tmp/requirements.txt \
 && pip install -c constraints.txt -r /tmp/requirements.txt

COPY definitions.py ./
COPY quantbias_assets ./quantbias_assets
COPY resources ./resources
COPY dbt_analysis ./dbt_analysis
# Editable, so resources/dbt.py finds dbt_analysis/ next to the code. The dbt manifest is prepared
# here, at build time, by dagster-dbt (`dbt parse` into dbt_analysis/target); then the code location
# must load without importing a model library.
RUN pip install --no-deps -e . \
 && dagster-dbt project prepare-and-package --file resources/dbt.py \
 && python -c "import sys, definitions; heavy = {'torch', 'transformers', 'vllm'} & set(sys.modules); sys.exit(f'code location imports {heavy}' if heavy else 0)" \
 && chown -R 1000:1000 /opt/quantbias

USER 1000:1000
ENV HOME=/home/quantbias
EXPOSE 3030
# The Helm chart runs `dagster api grpc -m definitions -h 0.0.0.0 -p 3030` in this image.
CMD ["dagster", "api", "grpc", "-m", "definitions", "-h", "0.0.0.0", "-p", "3030"]
