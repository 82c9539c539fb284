"""Evaluation, outside the runtime: metrics, dataset loaders, the evaluation loop, the dense reference.

A robot that installs the runtime never imports this package.
"""
