# The one image every Backworks service runs (gateway, plugin stages, declare); see docker-compose.yml.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY backworks ./backworks
COPY contracts ./contracts
COPY gateway ./gateway
COPY pipeline ./pipeline
COPY plugins ./plugins
RUN pip install --no-cache-dir .
COPY examples ./examples
ENV BACKWORKS_LOG_FORMAT=json
USER nobody
ENTRYPOINT []
