#!/usr/bin/env python3
"""vit serve over real HTTP, against vit classify and vit features.

usage: tests/serve_test.py SOURCE_DIR VIT

Starts `vit serve --port 0` on 127.0.0.1 with a small fixture model (the
port is read from its "listening on" line), sends good and bad requests
with http.client and checks: answers equal `vit classify --format jsonl`
(labels, indices, scores as printed) and `vit features --pool cls`, one
list per file for multipart bodies, requests sent together batched
(/metrics), the 4xx codes with one-line JSON errors, 503 from a full
queue, the /metrics counts, and that SIGTERM lets a request in flight
finish and exits 0. Exits 77 (skipped) when vit was built without
libmicrohttpd.
"""
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import struct
import time

SOURCE, VIT = sys.argv[1], sys.argv[2]
MODEL = os.path.join(SOURCE, "tests/fixtures/parity/hf_vit_d48_h3")
IMAGES = [os.path.join(SOURCE, "tests/fixtures/real/apple.png"),
          os.path.join(SOURCE, "tests/fixtures/real/polars.png"),
          os.path.join(SOURCE, "tests/fixtures/webp/lossy.webp")]
failures = []


def check(ok, what):
    if not ok:
        failures.append(what)
        print(f"FAIL: {what}", file=sys.stderr)


class Server:
    """A running vit serve; its stderr is collected in the background."""

    def __init__(self, *args, model=MODEL):
        self.proc = subprocess.Popen([VIT, "serve", "-m", model, "--port", "0", *args],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.err = []
        self.port = None
        ready = threading.Event()

        def drain():
            for line in self.proc.stderr:
                self.err.append(line)
                m = re.search(r"listening on http://127\.0\.0\.1:(\d+)$", line.strip())
                if m:
                    self.port = int(m.group(1))
                    ready.set()
            ready.set()

        self.reader = threading.Thread(target=drain, daemon=True)
        self.reader.start()
        ready.wait(60)
        if self.port is None:
            self.proc.kill()
            raise SystemExit(f"vit serve did not start: {''.join(self.err)}")

    def request(self, method, path, body=None, headers=None, timeout=60, chunked=False):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        conn.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
        r = conn.getresponse()
        data = r.read()
        conn.close()
        return r.status, dict(r.getheaders()), data

    def announce(self, method, path, length):
        """Sends only the headers of a request with a body of length bytes
        and reads the answer, as a client waiting for 100-continue does
        (sending the body would race with the server closing on a 413)."""
        import socket
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=60)
        sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n"
                     "Expect: 100-continue\r\n\r\n".encode())
        r = http.client.HTTPResponse(sock)
        r.begin()
        data = r.read()
        sock.close()
        return r.status, dict(r.getheaders()), data

    def stop(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)
        code = self.proc.wait(120)
        self.reader.join(10)
        return code

    def stderr(self):
        return "".join(self.err)


def multipart(files, fields=()):
    boundary = "vitc-test-boundary-1234"
    out = b""
    for name, value in fields:
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n"
                ).encode() + value + b"\r\n"
    for i, path in enumerate(files):
        with open(path, "rb") as f:
            data = f.read()
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image{i}\"; "
                f"filename=\"{os.path.basename(path)}\"\r\n"
                "Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return out, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def read(path):
    with open(path, "rb") as f:
        return f.read()


def cli_rows(k):
    """vit classify --format jsonl -k k on IMAGES, as the server's lists."""
    out = subprocess.run([VIT, "classify", "-q", "-m", MODEL, "--format", "jsonl", "-k", str(k),
                          *IMAGES], capture_output=True, text=True, check=True).stdout
    rows = [json.loads(line) for line in out.splitlines()]
    return [[{"label": t["label"], "score": t["probability"], "index": t["index"]}
             for t in row["top"]] for row in rows]


def json_error(status, headers, data, code, what):
    """A JSON {"error": one line} with the expected status."""
    check(status == code, f"{what}: status {status}, expected {code}: {data!r}")
    check(headers.get("Content-Type") == "application/json", f"{what}: content type {headers}")
    try:
        body = json.loads(data)
    except ValueError:
        check(False, f"{what}: not JSON: {data!r}")
        return ""
    check(list(body) == ["error"] and isinstance(body["error"], str), f"{what}: {body}")
    check(data.count(b"\n") == 1 and data.endswith(b"\n"), f"{what}: not one line: {data!r}")
    return body.get("error", "")


def metric(text, name):
    m = re.search(r"^" + re.escape(name) + r" (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def test_answers_and_errors():
    s = Server()
    try:
        expected = cli_rows(3)
        # Raw bodies, one image each: the CLI's rows.
        for path, rows in zip(IMAGES, expected):
            status, headers, data = s.request("POST", "/classify?top_k=3", read(path))
            check(status == 200, f"classify {path}: {status} {data!r}")
            check(json.loads(data) == rows, f"classify {path}: {data!r} != {rows}")
        # The default top-k is 5 (classify's -k); scores printed as classify prints them.
        status, _, data = s.request("POST", "/classify", read(IMAGES[0]))
        check(len(json.loads(data)) == 5, f"default top_k: {data!r}")
        check(re.search(rb'"score":0\.\d{6},', data) is not None, f"score format: {data!r}")
        # Several files in one multipart body: a list per file, in order.
        body, headers = multipart(IMAGES)
        status, _, data = s.request("POST", "/classify?top_k=3", body, headers)
        check(status == 200 and json.loads(data) == expected, f"multipart: {status} {data!r}")
        # Features: the class token after the final norm, as vit features --pool cls.
        with tempfile.TemporaryDirectory() as tmp:
            npy = os.path.join(tmp, "f.npy")
            subprocess.run([VIT, "features", "-q", "-m", MODEL, "--pool", "cls", "-o", npy,
                            *IMAGES], check=True, capture_output=True)
            reference = read(npy)
        body, headers = multipart(IMAGES)
        status, h, data = s.request("POST", "/features?pool=cls", body,
                                    {**headers, "Accept": "application/octet-stream"})
        check(status == 200 and h.get("Content-Type") == "application/octet-stream",
              f"features npy: {status} {h}")
        check(data == reference, "features .npy differs from vit features --pool cls")
        # The .npy's second row as float32 bytes (header: magic, version, length).
        start = 10 + struct.unpack("<H", reference[8:10])[0]
        row = reference[start + 48 * 4:start + 2 * 48 * 4]
        status, _, data = s.request("POST", "/features?pool=cls", read(IMAGES[1]))
        got = struct.pack("<48f", *json.loads(data))  # %.9g: the float32 exactly
        check(status == 200 and got == row, "features JSON differs")
        status, _, data = s.request("POST", "/features", read(IMAGES[1]))  # pool=model: cls here
        check(struct.pack("<48f", *json.loads(data)) == row,
              "features pool=model differs from cls on a class-token model")

        # Errors: status, one-line JSON.
        cases = [
            ("POST", "/classify", b"not an image at all", {}, 422, "not an image"),
            ("POST", "/classify", read(IMAGES[0])[:300], {}, 422, "truncated"),
            ("POST", "/classify", b"", {}, 400, "empty body"),
            ("POST", "/classify?top_k=0", read(IMAGES[0]), {}, 400, "top_k"),
            ("POST", "/classify?top_k=abc", read(IMAGES[0]), {}, 400, "top_k"),
            ("POST", "/classify?bogus=1", read(IMAGES[0]), {}, 400, "unknown parameter"),
            ("POST", "/features?pool=max", read(IMAGES[0]), {}, 400, "pool"),
            ("GET", "/classify", None, {}, 405, "use POST"),
            ("POST", "/health", b"x", {}, 405, "use GET"),
            ("GET", "/nothing-here", None, {}, 404, "no such endpoint"),
            ("POST", "/classify", b"--x\r\nbroken", {"Content-Type": "multipart/form-data"}, 400,
             "boundary"),
        ]
        for method, path, body, headers, code, says in cases:
            status, h, data = s.request(method, path, body, headers)
            message = json_error(status, h, data, code, f"{method} {path} ({says})")
            check(says in message, f"{method} {path}: '{says}' not in {message!r}")
            if code == 405:
                check("Allow" in h, f"405 without Allow: {h}")
        body, headers = multipart(IMAGES[:1], fields=[("top_k", b"3")])
        status, h, data = s.request("POST", "/classify", body, headers)
        check("not a file" in json_error(status, h, data, 400, "form field"), f"{data!r}")
        body, headers = multipart(IMAGES[:1])
        status, h, data = s.request("POST", "/classify", body[:len(body) // 2], headers)
        json_error(status, h, data, 400, "truncated multipart")
        # A bad file among good ones fails the request, naming the file.
        with tempfile.TemporaryDirectory() as tmp:
            bad = os.path.join(tmp, "broken.jpg")
            with open(bad, "wb") as f:
                f.write(b"\xff\xd8\xff\xe0 not really")
            body, headers = multipart([IMAGES[0], bad])
        status, h, data = s.request("POST", "/classify", body, headers)
        check("broken.jpg" in json_error(status, h, data, 422, "bad file in multipart"), f"{data!r}")
        # Garbage of every size never takes the server down.
        for n in (1, 7, 64, 1000, 65536):
            status, _, _ = s.request("POST", "/classify", os.urandom(n))
            check(status in (400, 413, 422), f"random {n} bytes: {status}")
        status, _, data = s.request("GET", "/health")
        check(status == 200 and json.loads(data) == {"status": "ok"}, f"health: {data!r}")
        status, _, data = s.request("GET", "/info")
        info = json.loads(data)
        check(status == 200 and info["num_classes"] == 5 and info["hidden_size"] == 48 and
              "preprocess" in info and info["labels"].startswith("5 "), f"info: {info}")

        # /metrics counts what was sent.
        status, h, data = s.request("GET", "/metrics")
        text = data.decode()
        check(status == 200 and h.get("Content-Type", "").startswith("text/plain"), f"metrics {h}")
        classify_ok = 3 + 1 + 1  # raw, default top_k, multipart
        check(metric(text, 'vit_requests_total{endpoint="classify",code="200"}') == classify_ok,
              f"classify 200s: {text}")
        check(metric(text, 'vit_requests_total{endpoint="other",code="404"}') == 1, "404 count")
        check(metric(text, 'vit_requests_total{endpoint="health",code="200"}') == 1, "health count")
        images = 3 + 1 + 3 + 3 + 1 + 1  # classify raw, default, multipart; features
        check(metric(text, "vit_images_total") == images, f"images {metric(text, 'vit_images_total')}")
        check(metric(text, "vit_queue_length") == 0, "queue length")
        check(metric(text, 'vit_batch_size_bucket{le="+Inf"}') == metric(text, "vit_batch_size_count"),
              "batch histogram")
        check(metric(text, "vit_request_duration_seconds_count") is not None, "latency histogram")
        errors = metric(text, 'vit_errors_total{endpoint="classify"}')
        check(errors is not None and errors >= 10, f"classify errors: {errors}")
    finally:
        code = s.stop()
        check(code == 0, f"exit status {code}: {s.stderr()}")
    check("listening on" in s.stderr() and "stopped" in s.stderr(), s.stderr())
    for bad in ("AddressSanitizer", "runtime error", "LeakSanitizer"):
        check(bad not in s.stderr(), f"sanitizer: {s.stderr()}")


def test_batching():
    """8 requests at once with --max-wait-ms 200 share forward passes, and
    each answer is still the image's own."""
    s = Server("-b", "8", "--max-wait-ms", "200")
    try:
        expected = cli_rows(2)
        results = [None] * 8
        start = threading.Barrier(8)

        def send(i):
            start.wait()
            results[i] = s.request("POST", "/classify?top_k=2", read(IMAGES[i % 3]))

        threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for i, (status, _, data) in enumerate(results):
            check(status == 200 and json.loads(data) == expected[i % 3], f"batched {i}: {data!r}")
        text = s.request("GET", "/metrics")[2].decode()
        singles = metric(text, 'vit_batch_size_bucket{le="1"}')
        batches = metric(text, "vit_batch_size_count")
        check(metric(text, "vit_batch_size_sum") == 8, f"batch sum: {text}")
        print(f"  8 requests in {batches:.0f} forward passes ({singles:.0f} of one image)")
        check(batches is not None and batches < 8 and singles < batches,
              f"no batch of more than one image: {batches} batches, {singles} of one")
    finally:
        check(s.stop() == 0, "exit status")


def test_limits():
    s = Server("--queue", "1", "--max-wait-ms", "400", "--max-body-mb", "1", "--max-pixels", "200")
    try:
        status, h, data = s.announce("POST", "/classify", 2 << 20)
        check("limit of 1 MiB" in json_error(status, h, data, 413, "body too large"), f"{data!r}")
        # Chunked, without a length: read on, kept no more, 413 at its end.
        status, h, data = s.request("POST", "/classify", iter([b"\0" * 65536] * 32), chunked=True)
        check("limit of 1 MiB" in json_error(status, h, data, 413, "chunked too large"), f"{data!r}")
        # The pixel cap, before decoding (the photos are far over 200 pixels).
        status, h, data = s.request("POST", "/classify", read(IMAGES[0]))
        check("exceeds the limit" in json_error(status, h, data, 413, "pixel cap"), f"{data!r}")
    finally:
        check(s.stop() == 0, "exit status")
    # A queue of one image: while it waits 400 ms for company, the rest is refused.
    tiny = os.path.join(SOURCE, "tests/fixtures/webp/lossless.webp")
    s = Server("--queue", "1", "--max-wait-ms", "400")
    try:
        results = [None] * 6
        start = threading.Barrier(6)

        def send(i):
            start.wait()
            results[i] = s.request("POST", "/classify", read(tiny))

        threads = [threading.Thread(target=send, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        codes = sorted(r[0] for r in results)
        check(200 in codes and 503 in codes, f"queue of 1: {codes}")
        for status, h, data in results:
            if status == 503:
                check("queue full" in json_error(status, h, data, 503, "queue full"), f"{data!r}")
                check(h.get("Retry-After") == "1", f"Retry-After: {h}")
        text = s.request("GET", "/metrics")[2].decode()
        check(metric(text, "vit_queue_rejections_total") == codes.count(503), f"rejections: {text}")
        body, headers = multipart([tiny, tiny])
        status, h, data = s.request("POST", "/classify", body, headers)
        json_error(status, h, data, 413, "more images than the queue")
    finally:
        check(s.stop() == 0, "exit status")


def test_connections():
    """--timeout closes a connection that sends nothing; --max-connections
    turns away the connection over the limit, and the server goes on."""
    import socket
    s = Server("--timeout", "1", "--max-connections", "2")
    try:
        idle = [socket.create_connection(("127.0.0.1", s.port), timeout=10) for _ in range(2)]
        idle[0].sendall(b"POST /classify HTTP/1.1\r\nHost: x\r\n")  # and then nothing
        time.sleep(0.2)
        extra = socket.create_connection(("127.0.0.1", s.port), timeout=10)
        try:
            extra.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            got = extra.recv(100)
        except OSError:
            got = b""
        check(got == b"", f"a third connection over --max-connections 2 was served: {got!r}")
        extra.close()
        start = time.time()
        closed = [c.recv(100) for c in idle]  # both idle: closed by the 1 s timeout
        check(closed == [b"", b""] and time.time() - start < 8,
              f"idle connections not closed by --timeout: {closed}")
        for c in idle:
            c.close()
        status, _, _ = s.request("GET", "/health")
        check(status == 200, "server not answering after the connection tests")
    finally:
        check(s.stop() == 0, "exit status")


def test_headless():
    """A model without a head: /features answers, /classify says why not."""
    s = Server(model=os.path.join(SOURCE, "tests/fixtures/family/dinov2_model_hf"))
    try:
        status, h, data = s.request("POST", "/classify", read(IMAGES[0]))
        check("no classification head" in json_error(status, h, data, 400, "headless classify"),
              f"{data!r}")
        size = json.loads(s.request("GET", "/info")[2])["feature_size"]
        for pool in ("model", "mean", "cls"):
            status, _, data = s.request("POST", f"/features?pool={pool}", read(IMAGES[0]))
            check(status == 200 and len(json.loads(data)) == size, f"headless {pool}: {data[:80]!r}")
    finally:
        check(s.stop() == 0, "exit status")


def test_graceful_shutdown():
    """SIGTERM while a request waits in the queue: it is answered, then the
    server exits 0 and accepts no more connections."""
    s = Server("--max-wait-ms", "1500", "-b", "4")
    result = {}

    def send():
        result["r"] = s.request("POST", "/classify?top_k=1", read(IMAGES[0]))

    t = threading.Thread(target=send)
    t.start()
    time.sleep(0.5)
    s.proc.send_signal(signal.SIGTERM)
    t.join(60)
    code = s.proc.wait(60)
    s.reader.join(10)
    check(code == 0, f"exit status after SIGTERM: {code}: {s.stderr()}")
    status, _, data = result.get("r", (None, None, b""))
    check(status == 200 and len(json.loads(data)) == 1, f"in-flight request: {status} {data!r}")
    check("1 request in flight" in s.stderr(), s.stderr())
    try:
        s.request("GET", "/health", timeout=5)
        check(False, "still accepting after SIGTERM")
    except OSError:
        pass


def main():
    probe = subprocess.run([VIT, "serve", "-h"], capture_output=True, text=True)
    if probe.returncode != 0 and "without GNU libmicrohttpd" in probe.stderr:
        print("skipped: vit was built without libmicrohttpd")
        return 77
    for test in (test_answers_and_errors, test_batching, test_limits, test_connections, test_headless,
                 test_graceful_shutdown):
        print(f"{test.__name__} ...", flush=True)
        test()
    if failures:
        print(f"{len(failures)} failures", file=sys.stderr)
        return 1
    print("all serve tests passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
