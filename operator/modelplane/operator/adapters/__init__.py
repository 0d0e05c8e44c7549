"""LoRA adapters on running replicas: the admin API client, the pure plan, the sync loop.

`spec.adapters` never reaches the pod template (builders/adapters.py says what
does): the operator loads and unloads adapters through each serving
replica's admin API and reports per adapter in `status.adapters`.
"""
