"""Kubernetes API access through hoopgw: kubectl and client libraries, exec and attach."""
