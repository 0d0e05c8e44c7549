"""End-to-end tests against a real Kubernetes cluster (kind): `make e2e`.

Not part of `make test` (pytest's testpaths is tests/): they build images,
install the chart and serve a real model, which needs Docker, kind and a
cluster. Without them every test is skipped with the reason.
"""
