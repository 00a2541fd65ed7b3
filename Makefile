# airflow-dicom: `make demo` runs the example pipeline on an embedded PACS; `make test` runs every test
# against real Orthanc and dcmtk peers. Both do their own set-up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)
export TCP_NODELAY := 1

.PHONY: test demo bench venv sysdeps lint clean ui distributed distributed-stop

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

## Orthanc and dcmtk are the real peers of the integration tests and benchmarks; dicom3tools' dciodvfy
## checks that pseudonymised output adds no IOD errors; chromium and its driver run the browser tests.
sysdeps:
	@missing=""; \
	command -v Orthanc >/dev/null 2>&1 || [ -x /usr/sbin/Orthanc ] || missing="$$missing orthanc"; \
	[ -x /usr/bin/storescp ] || missing="$$missing dcmtk"; \
	[ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || missing="$$missing orthanc-dicomweb"; \
	[ -x /usr/bin/dciodvfy ] || missing="$$missing dicom3tools"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	[ -x /usr/bin/chromedriver ] || missing="$$missing chromium-driver"; \
	[ -x /usr/lib/postgresql/15/bin/initdb ] || missing="$$missing postgresql"; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v openssl >/dev/null 2>&1 || missing="$$missing openssl"; \
	[ -x /usr/bin/time ] || missing="$$missing time"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	  else \
	    echo "The tests need the Debian packages:$$missing. Install them as root:"; \
	    echo "  sudo apt-get update && sudo apt-get install -y$$missing"; \
	    exit 1; \
	  fi; \
	fi

## The README's first command: the example pipeline on an embedded PACS (no root, no Orthanc needed).
demo: venv
	$(BIN)/python -m demo.demo run

## The same set-up served in the Airflow UI (http://localhost:8080) until Ctrl-C.
ui: venv
	$(BIN)/python -m demo.demo ui

test: venv sysdeps
	$(BIN)/ruff check airflow_dicom tests benchmarks dags demo
	$(BIN)/python -m pytest tests

lint: venv
	$(BIN)/ruff check airflow_dicom tests benchmarks dags demo
	$(BIN)/ruff format --check airflow_dicom tests benchmarks dags demo

## The benchmarks use the test harness (Orthanc, dcmtk): tests/ on PYTHONPATH, as pytest's pythonpath does.
## The provider's bytecode is compiled first, as pip does when it installs the wheel (an editable install under
## PYTHONDONTWRITEBYTECODE=1 would otherwise compile ~40 modules again in every command it times).
bench: venv sysdeps
	$(BIN)/python -m compileall -q airflow_dicom
	PYTHONPATH=tests $(BIN)/python -m benchmarks.run $(if $(ONLY),--only $(ONLY))

## The reference production layout (README, "Distributed"): PostgreSQL, Redis, the Airflow services and two
## Celery workers, the PACS and the receiver service on their own addresses; loads 2,000 studies, backfills the
## find, retrieves everything under faults, prints a summary and leaves it running (.distributed/endpoints.json).
## STUDIES=n and FAULTS=kill-worker,restart-redis,restart-receiver,pacs-refuse (empty: none) change the run.
distributed: venv sysdeps
	PYTHONPATH=tests nice $(BIN)/python -m distributed.run up $(if $(STUDIES),--studies $(STUDIES)) \
	  $(if $(filter undefined,$(origin FAULTS)),,--faults "$(FAULTS)")

## Stops what `make distributed` started, and nothing else.
distributed-stop:
	PYTHONPATH=tests $(BIN)/python -m distributed.run stop

clean:
	rm -rf $(VENV) .pytest_cache .demo .distributed
