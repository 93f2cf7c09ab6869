# anomtune serving image: scores with a registered model over HTTP.
#
#   docker build -t anomtune .
#   docker run -v "$PWD/.anomtune:/data" -p 8080:8080 anomtune serve fraud@champion
#
# The serving path needs onnxruntime, NumPy, pandas and Arrow, not torch,
# Optuna or scikit-learn, so anomtune is installed without its dependencies
# and then only with what scoring, the registry and the server import. Tune
# and export with a full install (pip install anomtune), then serve here.
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1

WORKDIR /opt/anomtune
COPY pyproject.toml constraints.txt README.md ./
COPY anomtune ./anomtune
COPY registry ./registry
COPY cli ./cli
COPY datasets ./datasets
RUN pip install --no-deps .
RUN pip install -c constraints.txt onnxruntime numpy pandas pyarrow click sqlalchemy fastapi uvicorn uvloop httptools
RUN useradd --create-home --uid 10001 anomtune

# The mounted workspace holds the registry; inside the container the server
# must listen on every interface for the published port to reach it.
ENV ANOMTUNE_REGISTRY=/data/registry ANOMTUNE_HOST=0.0.0.0
USER anomtune
WORKDIR /data
EXPOSE 8080
ENTRYPOINT ["anomtune"]
CMD ["--help"]
