# The Label Studio ML backend (ml_backend/) in a container, in label-studio-ml-backend's conventions:
# `minigpt-annotate serve` (waitress) on port 9090, configured by environment variables, the model folder mounted at
# /models. Set BASIC_AUTH_USER and BASIC_AUTH_PASS (README, Production); docker-compose.yml requires them.
#   docker build -t minigpt-annotate-backend .                                            # CPU
#   docker build -t minigpt-annotate-backend --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124 .  # GPU
FROM python:3.11-slim

ARG TORCH_SPEC="torch>=2.2"
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PORT=9090 \
    MINIGPT_THREADS=8 \
    LOG_LEVEL=INFO \
    HF_HOME=/data/hf \
    MINIGPT_MODEL=/models/model \
    MINIGPT_CORRECTIONS_DIR=/data/corrections

WORKDIR /app
RUN pip install --index-url "$TORCH_INDEX" "$TORCH_SPEC"
COPY pyproject.toml README.md ./
COPY model ./model
COPY label_studio_access ./label_studio_access
COPY ml_backend ./ml_backend
COPY annotator ./annotator
COPY autolabel ./autolabel
COPY minigpt_annotate ./minigpt_annotate
RUN pip install ".[backend]"

EXPOSE 9090
# One process holds one copy of the model; threads serve concurrent requests (model calls are serialised inside).
# The README's production command; request limits and server settings come from MINIGPT_* (README, Production).
CMD exec minigpt-annotate serve --host 0.0.0.0 --port "$PORT"
