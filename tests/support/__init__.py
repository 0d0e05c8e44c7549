"""Test support importable by the tests and the benchmarks alike: the Kubernetes API
emulator (`kube_emulator`: KMock's emulator with what an API server adds, in a thread,
with a kubectl) and the RBAC checker every operator and gateway API call is run
through (`rbac_check`)."""
