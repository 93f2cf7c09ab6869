# anomtune command-line image.
#
#   docker build -t anomtune .
#   docker run --rm -v "$PWD:/work" -w /work anomtune tune data.csv --label is_anomaly
#
# torch is pinned in constraints.txt. To keep the image small, point pip at a
# CPU-only torch wheel index: docker build --build-arg TORCH_INDEX=<url> .
FROM python:3.11-slim

ARG TORCH_INDEX=""
ENV PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1

WORKDIR /opt/anomtune
COPY pyproject.toml constraints.txt README.md ./
COPY anomtune ./anomtune
COPY registry ./registry
COPY cli ./cli
RUN if [ -n "$TORCH_INDEX" ]; then \
        pip install --extra-index-url "$TORCH_INDEX" -c constraints.txt . ; \
    else \
        pip install -c constraints.txt . ; \
    fi \
    && useradd --create-home anomtune

USER anomtune
WORKDIR /work
ENTRYPOINT ["anomtune"]
CMD ["--help"]
