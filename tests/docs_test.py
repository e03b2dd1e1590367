#!/usr/bin/env python3
"""Runs the examples in README.md and docs/*.md and compares what they print
with what the page shows, so a changed message or format fails the tests
instead of drifting from the documentation.

What is run (docs/README.md, "Examples are tests", says the same):
  - every ```console block: each line starting with "$ " is a command (a line
    ending in "\\" continues it); the lines after it, up to the next command,
    are what a terminal shows: the command runs with its standard output and
    error on an 80-column pseudo-terminal, and progress lines that it erases
    are gone. In them "…" stands for any text within a line (timings, sizes),
    and a line that is "…" alone for any number of lines.
  - every ```python block, with /usr/bin/python3 (Debian's, with numpy) and
    PYTHONPATH=python (the binding, python/vitc), after
    the console blocks before it on the same page; it must exit 0.
  - ```sh blocks are shown, not run (installs, long trainings, servers).
A page's blocks run in order in one scratch directory, laid out like the
checkout (build/, data/, weights/, tests/, scripts/ are links to the real
ones) with ../shared beside it, so the commands read as a user types them
and their outputs land in the scratch directory. A block that names
../shared is skipped, with a line saying so, when ../shared is absent.

usage: tests/docs_test.py [--build DIR] [PAGE.md ...]
  (default: build/ and README.md docs/*.md)
exit status 0 when every example printed what its page shows.
"""
import fcntl
import os
import pty
import re
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import termios
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
LINKED = ["build", "data", "weights", "tests", "scripts", "bench", "docs", "python", "vit",
          "README.md"]
ELLIPSIS = "\u2026"
TIMEOUT = 600


def blocks(text):
    """(kind, first line number, body lines) of each fenced block; a block
    indented (inside a list item) loses its fence's indentation."""
    found, kind, body, start, indent = [], None, [], 0, 0
    for number, line in enumerate(text.split("\n"), 1):
        fence = re.match(r"^(\s*)```(\w*)\s*$", line)
        if fence and kind is None:
            kind, body, start, indent = fence.group(2) or "text", [], number, len(fence.group(1))
        elif fence and kind is not None:
            found.append((kind, start, body))
            kind = None
        elif kind is not None:
            body.append(line[indent:] if line[:indent].strip() == "" else line)
    return found


def commands(body):
    """(command, expected lines) of a console block."""
    runs, command, expected, continued = [], None, [], False
    for line in body:
        if continued:
            command += "\n" + line
            continued = line.endswith("\\")
        elif line.startswith("$ "):
            if command is not None:
                runs.append((command, expected))
            command, expected = line[2:], []
            continued = line.endswith("\\")
        elif command is not None:
            expected.append(line)
    if command is not None:
        runs.append((command, expected))
    return runs


def line_pattern(line):
    parts = [re.escape(p) for p in line.split(ELLIPSIS)]
    return re.compile("^" + ".*?".join(parts) + "$")


def matches(expected, got):
    """Whether the printed lines are the shown ones, with the markers."""
    def match(i, j):
        if i == len(expected):
            return j == len(got)
        if expected[i].strip() == ELLIPSIS:
            return any(match(i + 1, k) for k in range(j, len(got) + 1))
        return j < len(got) and line_pattern(expected[i]).match(got[j]) is not None and match(i + 1, j + 1)
    return match(0, 0)


def scratch(build):
    """A directory laid out like the checkout, with ../shared beside it and
    build/ the build directory under test."""
    top = tempfile.mkdtemp(prefix="vitc-docs-")
    work = os.path.join(top, "vitc")
    os.mkdir(work)
    for name in LINKED:
        target = build if name == "build" else os.path.join(ROOT, name)
        if os.path.exists(target):
            os.symlink(target, os.path.join(work, name))
    if os.path.isdir(SHARED):
        os.symlink(SHARED, os.path.join(top, "shared"))
    return top, work


def screen(raw):
    """The lines a terminal shows for raw output: a carriage return goes back
    to the start of the line, ESC [ K erases to its end (the progress line),
    other escape sequences change nothing on the page."""
    lines = []
    for text in raw.replace("\r\n", "\n").split("\n"):
        line, col, i = [], 0, 0
        while i < len(text):
            if text[i] == "\r":
                col, i = 0, i + 1
            elif text[i] == "\x1b":
                m = re.match(r"\x1b\[[0-9;?]*([A-Za-z])", text[i:])
                if m and m.group(1) == "K":
                    del line[col:]
                i += m.end() if m else 1
            else:
                line[col:col + 1] = [text[i]]
                col, i = col + 1, i + 1
        lines.append("".join(line).rstrip())
    while lines and lines[-1] == "":
        lines.pop()
    return lines


def run_on_terminal(command, work, env):
    """Runs command with its output on a pseudo-terminal of 80 columns, as a
    user sees it; returns (exit status, the lines on the screen)."""
    main_fd, child_fd = pty.openpty()
    fcntl.ioctl(child_fd, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 80, 0, 0))
    child = subprocess.Popen(["bash", "-c", command], cwd=work, env=env, stdin=subprocess.DEVNULL,
                             stdout=child_fd, stderr=child_fd, close_fds=True)
    os.close(child_fd)
    chunks, deadline = [], time.monotonic() + TIMEOUT
    while True:
        ready, _, _ = select.select([main_fd], [], [], 1.0)
        if ready:
            try:
                data = os.read(main_fd, 65536)
            except OSError:  # EIO: every writer has closed the terminal
                data = b""
            if not data:
                break
            chunks.append(data)
        elif time.monotonic() > deadline:
            child.kill()
            break
    os.close(main_fd)
    status = child.wait()
    return status, screen(b"".join(chunks).decode("utf-8", "replace"))


def run_console(page, start, body, work, env):
    failures = 0
    for command, expected in commands(body):
        while expected and expected[-1] == "":
            expected.pop()
        status, got = run_on_terminal(command, work, env)
        if not matches(expected, got):
            failures += 1
            print(f"{page}:{start}: $ {command}\n  the page shows:\n" +
                  "".join(f"    {line}\n" for line in expected) +
                  f"  it printed (exit {status}):\n" +
                  "".join(f"    {line}\n" for line in got))
    return failures


def run_python(page, start, body, work, env):
    # The binding from the checkout (python/vitc), as docs/python.md runs it.
    env = dict(env, PYTHONPATH="python")
    done = subprocess.run(["/usr/bin/python3", "-"], input="\n".join(body) + "\n", cwd=work, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)
    if done.returncode == 0:
        return 0
    print(f"{page}:{start}: the python block failed (exit {done.returncode}):\n{done.stderr}")
    return 1


def check_page(page, build):
    with open(page, encoding="utf-8") as f:
        text = f.read()
    top, work = scratch(build)
    env = dict(os.environ, LC_ALL="C.UTF-8", COLUMNS="80")
    env.pop("VITC_ISA", None)
    failures = ran = skipped = 0
    try:
        for kind, start, body in blocks(text):
            if kind not in ("console", "python"):
                continue
            if "../shared" in "\n".join(body) and not os.path.isdir(SHARED):
                skipped += 1
                continue
            ran += 1
            failures += (run_console if kind == "console" else run_python)(
                os.path.relpath(page, ROOT), start, body, work, env)
    finally:
        shutil.rmtree(top, ignore_errors=True)
    note = f", {skipped} skipped: ../shared is absent" if skipped else ""
    print(f"{os.path.relpath(page, ROOT)}: {ran} example blocks, {failures} failed{note}")
    return failures


def main():
    args, build = sys.argv[1:], os.path.join(ROOT, "build")
    if args[:1] == ["--build"]:
        build, args = os.path.abspath(args[1]), args[2:]
    pages = args or [os.path.join(ROOT, "README.md")] + sorted(
        os.path.join(ROOT, "docs", p) for p in os.listdir(os.path.join(ROOT, "docs")) if p.endswith(".md"))
    failures = sum(check_page(os.path.abspath(p), build) for p in pages)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
