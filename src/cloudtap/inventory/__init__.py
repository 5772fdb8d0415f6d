"""Cloud inventory: model, connectors (static, OpenStack, vSphere, Kubernetes, agents), history store, tagging."""
