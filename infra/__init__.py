"""How turnflow runs: settings, the temporal.yaml policy, the embedded stack and its supervisor, the CLI.

Deployment manifests for Kubernetes live beside it, in ``infra/k8s``.
"""
