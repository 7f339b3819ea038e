"""Kubernetes I/O: a thin, counted, timed and retrying layer over kubernetes_asyncio."""
