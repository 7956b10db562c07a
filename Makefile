VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PROTHEON := $(VENV)/bin/protheon
PROTO_OUT := protheon/rpc/v1

.PHONY: venv proto lint test test-fast demo bench chaos dashboard wheelhouse deploy clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[dev]'
	touch $@

proto: venv
	$(PY) -m grpc_tools.protoc -Iproto --python_out=. --pyi_out=. --grpc_python_out=. \
		proto/protheon/rpc/v1/chunks.proto

lint: venv
	$(VENV)/bin/ruff check protheon tests grafana bench
	$(VENV)/bin/mypy protheon

test: venv
	$(VENV)/bin/pytest -q

test-fast: venv
	$(VENV)/bin/pytest -q -m 'not slow'

bench: venv
	$(PY) bench/run.py

dashboard: venv
	$(PY) grafana/build_dashboard.py

wheelhouse: venv
	rm -rf wheelhouse && $(PIP) wheel --quiet -w wheelhouse . && rm -f wheelhouse/protheon-*.whl

deploy: venv
	cd ansible && ../$(VENV)/bin/ansible-playbook site.yml -i ../inventory.ini

demo: venv
	$(VENV)/bin/python -m protheon.demo

clean:
	rm -rf $(VENV) demo build *.egg-info

chaos: venv
	$(PY) bench/chaos.py
