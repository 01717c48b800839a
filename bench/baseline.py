"""The baseline: bare Flask, one route returning a small JSON object.

Served by the same `gunicorn.conf.py` (same workers, worker class and logging) as codexweb, so
the ratio codexweb/baseline measures what codexweb adds on top of the framework and server.
"""

from flask import Flask

app = Flask(__name__)


@app.get("/")
def index():
    return {"status": "ok"}
