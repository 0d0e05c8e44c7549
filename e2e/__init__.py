"""End-to-end tests against a real Kubernetes cluster (kind): `make e2e`.

Not part of `make test` (pytest's testpaths is tests/): they build images,
install the chart and serve a real model, which needs Docker, kind and a
cluster with room. Without them every test is skipped with the reason. The
fixtures' wiring is checked on every `make test` all the same, against the
fake cluster in e2e/fake_cluster.py (tests/unit/test_e2e_fixtures.py).
"""
