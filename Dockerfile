# Image for the consumers, the CDC reader and the CLI (used by docker-compose.yml and
# deploy/k8s/). Dependencies come from requirements.lock with their hashes: the image
# runs the versions the tests ran.
FROM python:3.11-slim
WORKDIR /app
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY core ./core
COPY insights ./insights
COPY streams ./streams
COPY consumers ./consumers
COPY ddl ./ddl
COPY schemas ./schemas
RUN pip install --no-cache-dir --no-deps -e .
USER nobody
ENTRYPOINT []
