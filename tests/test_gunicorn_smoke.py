import json
import urllib.request

import pytest

from tests.servers import serve_gunicorn

pytestmark = pytest.mark.slow


def test_gunicorn_serves_health_and_request_ids(tmp_path):
    with serve_gunicorn(tmp_path, workers=2) as server:
        request = urllib.request.Request(server.url + "/healthz", headers={"X-Request-ID": "abc-1"})
        with urllib.request.urlopen(request) as response:
            assert json.load(response) == {"status": "ok"}
            assert response.headers["X-Request-ID"] == "abc-1"
