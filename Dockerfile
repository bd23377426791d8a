# Image for the consumers, the CDC reader and the CLI (used by docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY insights ./insights
COPY streams ./streams
COPY consumers ./consumers
COPY ddl ./ddl
COPY schemas ./schemas
RUN pip install --no-cache-dir -e .
USER nobody
ENTRYPOINT []
