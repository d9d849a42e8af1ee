"""Reverse geocoding: a place name for coordinates, from the service at LOREPIN_GEOCODER_URL.

The service is outside the CMS: in local and feature environments a mock of it runs
(compose/images/geocoder-mock), so no environment but production calls the outside world.
A slow or failing geocoder never fails a request: the pin is saved without a name.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request

from lorepin_cms import metrics

log = logging.getLogger("lorepin_cms.geocoder")


def place_name(
    base_url: str | None, latitude: float, longitude: float, *, timeout: float = 2.0
) -> str | None:
    if not base_url:
        return None
    query = urllib.parse.urlencode({"lat": f"{latitude:.6f}", "lon": f"{longitude:.6f}"})
    url = f"{base_url.rstrip('/')}/reverse?{query}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (configured)
            name = json.loads(response.read()).get("name")
    except (urllib.error.URLError, OSError, ValueError, AttributeError) as exc:
        metrics.ERRORS.labels("geocoder").inc()
        log.warning(
            "geocoder unavailable (%s); saving the pin without a place name", type(exc).__name__
        )
        return None
    return str(name)[:200] if name else None
