"""Reading a worker pool's Prometheus metrics as a scraper would (`engine worker
--metrics-port`): a free port to serve them on, and one scrape."""
import socket
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port):
    """{sample name (with its le for buckets): value}; {} while nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return {}
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = sample.name + (f"le={sample.labels['le']}" if "le" in sample.labels else "")
            samples[key] = samples.get(key, 0) + sample.value
    return samples
