# The workbench as a container: `docker build -t workbench .` then
# `docker run -p 127.0.0.1:8501:8501 -v workbench-data:/app/data -v workbench-models:/app/models workbench`.
# Inside the container Streamlit listens on 0.0.0.0:8501; publish it on the host's loopback and put a
# reverse proxy with authentication in front (README: "Docker").
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    WORKBENCH_DATA_ROOTS=/app/data \
    WORKBENCH_MODELS_DIR=/app/models \
    WORKBENCH_SUBMISSIONS_DIR=/app/submissions \
    WORKBENCH_SPECS_DIR=/app/specs \
    WORKBENCH_CACHE_DIR=/app/.cache

RUN useradd --create-home --uid 10001 --user-group workbench

WORKDIR /app

# The same pins as `make run`; torch comes from PyTorch's CPU wheel index (no CUDA libraries in the image).
COPY requirements.txt ./
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu -r requirements.txt

COPY .streamlit/ .streamlit/
COPY core/ core/
COPY app/ app/
COPY docker/entrypoint.sh docker/entrypoint.sh

# Writable state lives in volumes owned by the app user; named volumes inherit this ownership.
RUN mkdir -p data models submissions specs .cache \
    && chown workbench:workbench data models submissions specs .cache \
    && chmod 0755 docker/entrypoint.sh
VOLUME ["/app/data", "/app/models", "/app/submissions", "/app/specs"]

USER workbench
EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4)"]

ENTRYPOINT ["/app/docker/entrypoint.sh"]
