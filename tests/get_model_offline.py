#!/usr/bin/env python3
"""scripts/get-model against a local stand-in for the Hub (no network).

usage: tests/get_model_offline.py SOURCE_DIR VIT

Serves the Hub's API answers and files for acme/tiny-vit (from a test
model) on 127.0.0.1, points HF_ENDPOINT at it and checks that get-model
lays out the Hugging Face cache (blobs by checksum, snapshot symlinks,
refs), sends HF_TOKEN, refuses a corrupted file, writes --local-dir, and
that `vit info -m acme/tiny-vit [--revision v2]` then finds the model; then
that a hostile stand-in (commit, names or checksums that are paths) is
refused with nothing written.
"""
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading

SOURCE, VIT = sys.argv[1], sys.argv[2]
MODEL = os.path.join(SOURCE, "tests/fixtures/parity/hf_vit_d48_h3")
COMMIT = "0123456789abcdef0123456789abcdef01234567"
seen_auth = []


def check(ok, what):
    if not ok:
        print(f"FAIL: {what}", file=sys.stderr)
        sys.exit(1)


def run(args, env, expect=0):
    r = subprocess.run(args, env=env, capture_output=True, text=True)
    check(r.returncode == expect, f"{' '.join(args)}: exit {r.returncode}, want {expect}\n{r.stderr}")
    return r


def hostile_hub(tmp, script, files, tree):
    """Issue 24: a Hub (or a proxy) whose answers are paths. Its commit, file
    names and checksums become paths in the cache; each must be refused
    (exit 1) before anything is written, and nothing outside the cache may
    change (a commit of "../../../victim" once made get-model replace the
    files there with symlinks, exit 0)."""
    victim = os.path.join(tmp, "victim")
    os.makedirs(victim)
    for name in ("model.safetensors", "config.json", "precious"):
        with open(os.path.join(victim, name), "w") as out:
            out.write("the user's " + name)
    evil = "../../../victim"
    lfs_oid = tree[0]["lfs"]["oid"]

    def with_entry(index, **changes):
        changed = [dict(e) for e in tree]
        changed[index].update(changes)
        return changed

    cases = [  # (what, commit, tree, words the message must hold)
        ("commit is a path", evil, tree, "not a commit hash"),
        ("commit is not hex", "g" * 40, tree, "not a commit hash"),
        ("LFS checksum is a path", COMMIT, with_entry(0, lfs={"oid": evil, "size": 1}), "sha256"),
        ("git checksum is a path", COMMIT, with_entry(1, oid="../" + "0" * 37), "git object id"),
        ("file name climbs", COMMIT, with_entry(1, path="../../../victim/config.json"),
         "not a relative name"),
        ("file name is absolute", COMMIT, with_entry(1, path=victim + "/config.json"),
         "not a relative name"),
        ("tree is not a list", COMMIT, {"model.safetensors": tree[0]}, "not a list"),
    ]
    answer = {}

    class Hostile(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # raw paths: no normalising of '..'
            if "/revision/" in self.path:
                body = json.dumps({"sha": answer["commit"]}).encode()
            elif "/tree/" in self.path:
                body = json.dumps(answer["tree"]).encode()
            else:
                body = files.get(self.path.rsplit("/", 1)[-1], b"")
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for what, commit, listed, words in cases:
            answer.update(commit=commit, tree=listed)
            cache = os.path.join(tmp, "hostile-hub", "hub")
            env = dict(os.environ, HF_ENDPOINT=f"http://127.0.0.1:{server.server_address[1]}",
                       HF_HUB_CACHE=cache)
            env.pop("HF_HOME", None)
            r = run([script, "acme/tiny-vit"], env, expect=1)
            check(words in r.stderr and len(r.stderr.strip().splitlines()) == 1,
                  f"hostile Hub, {what}: {r.stderr}")
            for name in ("model.safetensors", "config.json", "precious"):
                path = os.path.join(victim, name)
                check(not os.path.islink(path) and open(path).read() == "the user's " + name,
                      f"hostile Hub, {what}: {path} was changed")
            check(sorted(os.listdir(victim)) == ["config.json", "model.safetensors", "precious"],
                  f"hostile Hub, {what}: files appeared in {victim}: {os.listdir(victim)}")
            leftovers = [os.path.join(d, f) for d, _, fs in os.walk(cache) for f in fs]
            check(not leftovers, f"hostile Hub, {what}: files written: {leftovers}")
            shutil.rmtree(os.path.dirname(cache), ignore_errors=True)
        check(lfs_oid == tree[0]["lfs"]["oid"], "the good tree was left alone")
    finally:
        server.shutdown()


def main():
    tmp = tempfile.mkdtemp(prefix="vitc-get-model-")
    try:
        srv = os.path.join(tmp, "srv")
        files = {name: open(os.path.join(MODEL, name), "rb").read()
                 for name in ("model.safetensors", "config.json")}
        tree = [
            {"type": "file", "path": "model.safetensors", "oid": "0" * 40,
             "lfs": {"oid": hashlib.sha256(files["model.safetensors"]).hexdigest(),
                     "size": len(files["model.safetensors"])}},
            {"type": "file", "path": "config.json",
             "oid": hashlib.sha1(b"blob %d\0" % len(files["config.json"]) + files["config.json"]).hexdigest()},
            {"type": "directory", "path": "extra"},
        ]
        put = {
            "api/models/acme/tiny-vit/revision/main": json.dumps({"sha": COMMIT}).encode(),
            "api/models/acme/tiny-vit/revision/v2": json.dumps({"sha": COMMIT}).encode(),
            f"api/models/acme/tiny-vit/tree/{COMMIT}": json.dumps(tree).encode(),
        }
        for name, data in files.items():
            put[f"acme/tiny-vit/resolve/{COMMIT}/{name}"] = data
        for path, data in put.items():
            os.makedirs(os.path.dirname(os.path.join(srv, path)), exist_ok=True)
            with open(os.path.join(srv, path), "wb") as out:
                out.write(data)

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **k):
                super().__init__(*a, directory=srv, **k)

            def do_GET(self):
                seen_auth.append(self.headers.get("Authorization"))
                super().do_GET()

            def log_message(self, *a):
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        script = os.path.join(SOURCE, "scripts/get-model")
        cache = os.path.join(tmp, "hub")
        env = dict(os.environ, HF_ENDPOINT=f"http://127.0.0.1:{server.server_address[1]}",
                   HF_HUB_CACHE=cache, HF_TOKEN="hf_test")
        env.pop("HF_HOME", None)

        run([script, "acme/tiny-vit"], env)
        check(seen_auth and all(a == "Bearer hf_test" for a in seen_auth), f"HF_TOKEN sent: {seen_auth}")
        repo = os.path.join(cache, "models--acme--tiny-vit")
        check(open(os.path.join(repo, "refs/main")).read() == COMMIT, "refs/main holds the commit")
        for entry in tree:
            if entry["type"] != "file":
                continue
            link = os.path.join(repo, "snapshots", COMMIT, entry["path"])
            blob = entry["lfs"]["oid"] if "lfs" in entry else entry["oid"]
            check(os.readlink(link) == f"../../blobs/{blob}", f"{link} -> ../../blobs/{blob}")
            check(open(link, "rb").read() == files[entry["path"]], f"{link} content")
        r = run([VIT, "info", "-m", "acme/tiny-vit"], env)
        check(f"snapshots/{COMMIT}/model.safetensors" in r.stdout, r.stdout)

        run([script, "acme/tiny-vit", "--revision", "v2"], env)
        check(open(os.path.join(repo, "refs/v2")).read() == COMMIT, "refs/v2")
        run([VIT, "info", "-m", "acme/tiny-vit", "--revision", "v2"], env)

        local = os.path.join(tmp, "local")
        run([script, "acme/tiny-vit", "--local-dir", local], env)
        check(sorted(os.listdir(local)) == ["config.json", "model.safetensors"], os.listdir(local))
        run([VIT, "info", "-m", local], env)

        # A file that does not match its checksum is not kept.
        with open(os.path.join(srv, f"acme/tiny-vit/resolve/{COMMIT}/config.json"), "wb") as out:
            out.write(b"{}")
        bad = os.path.join(tmp, "bad-cache")
        r = run([script, "acme/tiny-vit"], dict(env, HF_HUB_CACHE=bad), expect=1)
        check("checksum mismatch" in r.stderr, r.stderr)
        blobs = os.listdir(os.path.join(bad, "models--acme--tiny-vit/blobs"))
        check(tree[1]["oid"] not in blobs and not any("incomplete" in b for b in blobs), blobs)

        r = run([script, "acme/absent"], env, expect=1)
        check("HTTP 404" in r.stderr, r.stderr)
        r = run([script, "a/b/c"], env, expect=1)
        check("not a Hub name" in r.stderr, r.stderr)
        r = run([script, "acme/tiny-vit", "--revision"], env, expect=1)
        check("needs a value" in r.stderr, r.stderr)
        server.shutdown()
        hostile_hub(tmp, script, files, tree)
        print("get-model offline: all checks passed")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
