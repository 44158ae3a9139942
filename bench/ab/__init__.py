"""Helpers of bench/ab_serving.py: workloads, server launcher, client/metrics, report."""
