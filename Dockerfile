FROM python:3.12-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas schemas
COPY eventstore eventstore
COPY dispatcher dispatcher
COPY worker worker
COPY projector projector
COPY natchet natchet
COPY examples examples
RUN pip install --no-cache-dir .
USER nobody
CMD ["natchet", "engine"]
