# One image for every Batchcalls process: the API (default), Celery worker and beat, Flower and
# the one-shot migration. docker-compose.yml and the Procfile pick the process by command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Install the package itself (with its package data: Lua scripts, SQL migrations, voice catalog),
# then drop the source tree so every process runs the installed copy, not a shadowing checkout.
WORKDIR /src
COPY pyproject.toml setup.cfg setup.py README.rst ./
COPY batchcalls ./batchcalls
COPY api ./api
COPY workers ./workers
COPY config ./config
RUN pip install . \
    && cd / \
    && rm -rf /src

RUN useradd --create-home --home-dir /home/batchcalls --uid 10001 --user-group batchcalls
WORKDIR /home/batchcalls
USER batchcalls

EXPOSE 8000

# The Procfile's `web` line, run by a shell as a Procfile runner would.
CMD ["sh", "-c", "gunicorn --bind 0.0.0.0:${PORT:-8000} --workers ${WEB_CONCURRENCY:-2} --access-logfile - 'api.app:create_app()'"]
