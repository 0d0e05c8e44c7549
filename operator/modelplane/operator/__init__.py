"""The Modelplane operator (`modelplane operator`): kopf handlers over pure decisions.

Where things live:

- `handlers`: the kopf registration (indexes, events, the operator's loops);
- `reconcile/`: the reconciler, the one writer of children and of most of
  the status, with its pure plans (replicas, children, rollout, status);
- `builders/`: pure `spec -> manifest` functions for every child;
- `autoscaler/`: the pure scaling policy and the controller that writes
  the LLMDeployment's `spec.replicas` (never a child);
- `canary/`: the canary planner, its step analysis and the store between them;
- `kube/`: the API client (the one place that writes), resource types, peering;
- `config`, `crd`, `metrics`: the operator's config file, the generated CRD,
  its own Prometheus metrics; `operator_command`, `render_command`: the CLI.
"""
