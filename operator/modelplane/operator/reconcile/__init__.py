"""Reconciling one LLMDeployment: the only writer of its children and of most of its status.

`reconciler` runs the loop (parse, check, build, plan, apply, observe, report);
the pure parts beside it decide: `parsing` and `fit` (is the spec servable),
`replicas` (the Deployment's count from `spec.replicas`), `children_plan`
(what to apply, rescale or delete), `rollout` (where a rolling update
stands), `status` (the status fields and conditions). `observed` and `pods`
are the compact views the watch-fed indexes keep; `expectations` lays the
operator's own unseen writes over them.
"""
