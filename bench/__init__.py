"""Benchmarks: codexweb against a bare Flask app under the same gunicorn settings.

`make bench` (or `python -m bench.run`) starts both under gunicorn, seeds data, drives load
with wrk from a separate process and writes `bench/results/<timestamp>.json`.
"""
