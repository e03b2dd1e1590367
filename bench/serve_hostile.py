#!/usr/bin/python3
"""Hostile clients against a running vit serve, for bench/serve_load.sh --soak.

usage: bench/serve_hostile.py PORT SECONDS PHOTO

For SECONDS, all at once (issue 24's points 1-3, and malformed heads):
  - 3 bombers POSTing decompression bombs in turn (tests/bombs.py): the
    10000 x 10000 PNG, animated WebP, JPEG cut after 50 bytes of scan and
    GIF screen, which the default --decode-mb refuses at once, and bombs
    that fit it and are decoded, one at a time: a 6000 x 6000 PNG (~240 MiB
    at its peak), a 5000 x 5000 animated WebP (~290 MiB), a 6000 x 6000 JPEG
    (~240 MiB);
  - 1 client sending 19 MiB multipart bodies of 300,000 one-byte parts;
  - 64 slowloris sockets, each sending a byte of request head every 5 s
    and reconnecting when closed;
  - 4 slow bodies: a 1 MB Content-Length, 100 bytes a second;
  - 1 client sending heads with a malformed Content-Length, 10 a second;
  - 1 normal client: PHOTO every second, its answers and latency recorded.
Prints one RESULT line (key=value) that the shell script reads: the normal
client's answers (normal_ok of normal_total, the slowest in ms, the
longest stretch without a 200), and counts per hostile kind.
"""
import collections
import http.client
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
import bombs  # noqa: E402

PORT, SECONDS, PHOTO = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
END = time.monotonic() + SECONDS
counts = collections.Counter()
lock = threading.Lock()


def count(key):
    with lock:
        counts[key] += 1


def post(body, headers=None, timeout=120):
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=timeout)
    try:
        conn.request("POST", "/classify", body=body, headers=headers or {})
        r = conn.getresponse()
        r.read()
        return r.status
    except OSError as e:
        return type(e).__name__
    finally:
        conn.close()


def bomber(start, pile):
    i = start
    while time.monotonic() < END:
        name, body = pile[i % len(pile)]
        count(f"bomb_{name}_{post(body)}")
        i += 1


def parts():
    part = b'--b\r\nContent-Disposition: form-data; name="f"; filename="x"\r\n\r\nA\r\n'
    body = part * 300000 + b"--b--\r\n"
    while time.monotonic() < END:
        count(f"parts_{post(body, {'Content-Type': 'multipart/form-data; boundary=b'})}")


def slow(head, chunk, every, key):
    """Sends head, then chunk every `every` seconds; reconnects when closed."""
    while time.monotonic() < END:
        try:
            s = socket.create_connection(("127.0.0.1", PORT), timeout=every + 5)
            s.sendall(head)
            while time.monotonic() < END:
                time.sleep(every)
                s.sendall(chunk)
        except OSError:
            count(f"{key}_closed")
        finally:
            try:
                s.close()
            except (OSError, UnboundLocalError):
                pass


def malformed():
    while time.monotonic() < END:
        try:
            s = socket.create_connection(("127.0.0.1", PORT), timeout=10)
            s.sendall(b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n")
            status = s.recv(12)[9:12].decode() or "closed"
            s.close()
        except OSError as e:
            status = type(e).__name__
        count(f"malformed_{status}")
        time.sleep(0.1)


normal = []  # (time, status, seconds)


def normal_client():
    with open(PHOTO, "rb") as f:
        photo = f.read()
    while time.monotonic() < END:
        t = time.monotonic()
        status = post(photo, timeout=60)
        normal.append((t, status, time.monotonic() - t))
        time.sleep(max(0.0, 1.0 - (time.monotonic() - t)))


def main():
    refused = [("png10000", bombs.png(10000)), ("webp10000", bombs.webp_animation(10000)),
               ("jpgcut10000", bombs.jpeg_truncated(10000)), ("gif10000", bombs.gif(10000))]
    decoded = [("png6000", bombs.png(6000)), ("webp5000", bombs.webp_animation(5000)),
               ("jpg6000", bombs.jpeg(6000))]
    pile = refused + decoded
    threads = [threading.Thread(target=bomber, args=(start, pile)) for start in (0, 2, 5)]
    threads.append(threading.Thread(target=parts))
    threads += [threading.Thread(target=slow, args=(b"GET /health HTTP/1.1\r\nHost: x\r\n", b"X", 5.0,
                                                    "slowloris")) for _ in range(64)]
    threads += [threading.Thread(target=slow, args=(b"POST /classify HTTP/1.1\r\nHost: x\r\n"
                                                    b"Content-Length: 1000000\r\n\r\n", b"\0" * 100, 1.0,
                                                    "slowbody")) for _ in range(4)]
    threads += [threading.Thread(target=malformed), threading.Thread(target=normal_client)]
    for t in threads:
        t.daemon = True
        t.start()
    threads[-1].join()  # the normal client stops at the end
    time.sleep(1)
    ok = [n for n in normal if n[1] == 200]
    gap, last = 0.0, normal[0][0] if normal else 0.0
    for t, status, seconds in normal:
        if status == 200:
            gap = max(gap, t + seconds - last)
            last = t + seconds
    with lock:
        hostile = " ".join(f"{k}={v}" for k, v in sorted(counts.items()))
    print(f"RESULT normal_ok={len(ok)} normal_total={len(normal)} "
          f"normal_max_ms={max((n[2] for n in normal), default=0) * 1000:.0f} "
          f"normal_gap_s={gap:.1f} {hostile}", flush=True)


if __name__ == "__main__":
    main()
