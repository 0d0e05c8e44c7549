"""Which replicas serve which model: from the operator's Services in a cluster
(`kubernetes`) or from a static file in local mode (`static`)."""
