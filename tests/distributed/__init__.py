"""A distributed Airflow stack (CeleryExecutor, PostgreSQL, Redis, two workers): tests, `make distributed`."""
