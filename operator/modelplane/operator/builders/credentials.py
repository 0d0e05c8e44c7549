"""What a pod needs to reach a private model source and a private registry.

`spec.model.credentialsSecretRef` names a Secret whose keys are the
variables the engine's downloaders read: `HF_TOKEN` (huggingface_hub) for
hf:// sources, the `AWS_*` variables (vLLM's Run:ai streamer and boto) for
s3:// sources. Each becomes an `env` entry that references the Secret
(`valueFrom.secretKeyRef`), so the kubelet reads the value and the operator
never does (its RBAC has no access to Secrets). A missing required key
stops the pod at CreateContainerConfigError with the key's name; the
optional ones may be absent. Only these names are taken from the Secret:
importing every key (`envFrom`) would let a Secret set `LD_PRELOAD` or
`PYTHONPATH` in the server.
"""

from __future__ import annotations

from typing import Any, Final

from modelplane.api.llmdeployment import LLMDeploymentSpec, SourceScheme
from modelplane.operator.config import OperatorConfig

# (variable, optional)
HF_VARIABLES: Final = (("HF_TOKEN", False),)
S3_VARIABLES: Final = (
    ("AWS_ACCESS_KEY_ID", False),
    ("AWS_SECRET_ACCESS_KEY", False),
    ("AWS_SESSION_TOKEN", True),
    ("AWS_REGION", True),
    ("AWS_DEFAULT_REGION", True),
    ("AWS_ENDPOINT_URL", True),
)


def credential_env(spec: LLMDeploymentSpec) -> list[dict[str, Any]]:
    """`env` entries taking the source's credentials from the referenced Secret."""
    ref = spec.model.credentials_secret_ref
    if ref is None:
        return []
    variables = HF_VARIABLES if spec.model.scheme is SourceScheme.HF else S3_VARIABLES
    return [
        {
            "name": variable,
            "valueFrom": {
                "secretKeyRef": {"name": ref.name, "key": variable, "optional": optional}
            },
        }
        for variable, optional in variables
    ]


def pod_identity(spec: LLMDeploymentSpec, config: OperatorConfig) -> dict[str, Any]:
    """Pod spec fields: the ServiceAccount (workload identity) and the image pull Secrets."""
    fields: dict[str, Any] = {}
    if spec.service_account_name:
        fields["serviceAccountName"] = spec.service_account_name
    names = list(
        dict.fromkeys([*config.images.pull_secrets, *(r.name for r in spec.image_pull_secrets)])
    )
    if names:
        fields["imagePullSecrets"] = [{"name": name} for name in names]
    return fields
