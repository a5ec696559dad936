# The report-chain image. docker-compose.yml runs it twice: as the worker
# (`python -m worker`, the default command) and as the one-shot
# `python -m devstack setup`, so both come from the one `pip install .`.

# A patch release on a named Debian release: rebuilds get the same interpreter and libc.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
# A virtualenv is one self-contained directory that the runtime stage copies whole.
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependencies first, exactly as pinned and hash-checked in requirements.lock (`make lock`
# writes it from pyproject.toml), so editing the code does not re-download openai,
# confluent-kafka and pydantic on every build, and every build gets the same versions.
COPY requirements.lock ./
RUN pip install --require-hashes -r requirements.lock

# Then the project itself (worker, producer, ops, devstack; see packages.find in pyproject.toml),
# without resolving anything again. Not editable: the runtime image carries installed packages,
# not this source tree.
COPY . .
RUN pip install --no-deps . \
    && pip check \
    && python -c "import worker, producer, ops, devstack"

FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# A fixed numeric uid, so orchestrators that insist on non-root (runAsNonRoot) can verify it.
# /identity: Docker Compose mounts its `identity` volume there, and a new volume takes the directory's
# owner, so the key pair `python -m devstack identity` writes belongs to this user (restate-server,
# which runs as root, reads the private key).
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --create-home --shell /usr/sbin/nologin app \
    && mkdir /identity && chown 10001:10001 /identity
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
USER 10001:10001

# The Restate endpoint (HTTP/2) and GET /health share this port; WORKER_BIND sets it.
EXPOSE 9080
# slim has no curl: ask Python. The port follows WORKER_BIND so an override keeps the check honest.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('WORKER_BIND', '0.0.0.0:9080').rpartition(':')[2]; urllib.request.urlopen(f'http://127.0.0.1:{port}/health', timeout=2)"]

CMD ["python", "-m", "worker"]
