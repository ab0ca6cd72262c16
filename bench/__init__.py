"""The performance benchmark: `python -m bench` starts the real stack (PostgreSQL, Redis, the API
under gunicorn, two Celery worker processes, beat, the simulator) and measures slot and
calls-per-second utilisation, engine throughput against bare Celery in the same run, submit and
dispatch latency, and memory. See README.rst, "Performance"."""
