# lapo-stack service image.
#   GPU (default):  docker build -t lapo .          (the `gpu-serve` extra: CUDA vLLM 0.32.0)
#   CPU:            docker build --build-arg ENGINE=cpu -t lapo:cpu .
# Checkpoints are mounted at /models (LAPO_MODEL=/models/lapo); keys come from the
# environment (LAPO_API_KEYS, LAPO_ADMIN_KEY), never baked in.
ARG BASE=python:3.11-slim
FROM ${BASE}

ARG ENGINE=gpu-serve
ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 \
    LAPO_HOST=0.0.0.0 LAPO_PORT=8000 LAPO_MODEL=/models/lapo LAPO_CACHE_DIR=/cache

RUN useradd --create-home --uid 10001 lapo
WORKDIR /app
COPY pyproject.toml README.md ./
COPY lapo ./lapo
COPY service ./service
COPY training ./training
COPY evaluation ./evaluation
COPY loadtests ./loadtests
# The project itself, from this context; engine versions are pinned in pyproject.toml.
# hadolint ignore=DL3013
RUN pip install ".[${ENGINE},serve]" \
    && if [ "${ENGINE}" = "cpu" ]; then \
         pip uninstall -y torchvision torchaudio torchcodec || true; \
       fi \
    && mkdir -p /cache /models && chown lapo /cache /models

USER 10001
EXPOSE 8000
# /cache holds vLLM's compile cache (torch.compile results): mount a volume there so that a
# restarted container, or a hot-swap to a checkpoint of the same architecture, does not
# compile again (docs in the README: cold vs warm start).
VOLUME ["/models", "/cache"]
HEALTHCHECK --interval=15s --timeout=3s --start-period=120s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health')"]
CMD ["lapo", "serve"]
