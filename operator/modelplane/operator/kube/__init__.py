"""The operator's side of the Kubernetes API: the client that writes (`client`), the
resource types and their paths (`resources`), and whether this replica is the active
one (`peering`)."""
