"""Scrapes Prometheus endpoints and parses them with the official Python client's parser.

Usage: scrape_metrics.py NAME=URL [NAME=URL ...]

Prints one JSON object: for each NAME, the list of samples
{"name", "labels", "value", "family", "type"} exactly as prometheus_client parsed them. A page
the parser rejects fails the script (exit 1), so the Rust test sees it.
"""

import json
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def scrape(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        content_type = response.headers.get("Content-Type", "")
        if not content_type.startswith("text/plain"):
            raise SystemExit(f"{url}: content type {content_type!r}, not text/plain")
        text = response.read().decode("utf-8")
    samples = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.append(
                {
                    "name": sample.name,
                    "labels": sample.labels,
                    "value": sample.value,
                    "family": family.name,
                    "type": family.type,
                }
            )
    return samples


def main():
    result = {}
    for arg in sys.argv[1:]:
        name, _, url = arg.partition("=")
        result[name] = scrape(url)
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
