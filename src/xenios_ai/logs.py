"""`xenios-ai logs`: read the service's JSON log stream and show it readable, filtered.

    xenios-ai logs api.log                                  # a file
    just logs worker-llm | uv run xenios-ai logs --job 3f2a  # the compose stack (prefixes are skipped)
    xenios-ai logs --follow --queue llm --level WARNING /var/log/xenios/worker.log

One line per record: time (UTC), level, component, the ids that matter (job, kind, queue, request) and the
message, then the error of a record that has one. Lines that are not JSON (a banner, a crash report) are
shown as they are unless a filter is given. ``--job`` and ``--request`` match a prefix of the id.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any, TextIO

import msgspec

LEVELS = {"TRACE": 5, "DEBUG": 10, "INFO": 20, "SUCCESS": 25, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}
_COLORS = {"DEBUG": "\x1b[2m", "WARNING": "\x1b[33m", "ERROR": "\x1b[31m", "CRITICAL": "\x1b[1;31m"}
_DIM, _CYAN, _RESET = "\x1b[2m", "\x1b[36m", "\x1b[0m"
_IDS = (("job_id", "job"), ("kind", "kind"), ("queue", "queue"), ("request_id", "req"))
_decode = msgspec.json.Decoder(dict[str, Any]).decode


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", nargs="?", default="-", help="a JSON log file; - or nothing: stdin")
    parser.add_argument("--queue", help="only records of this queue")
    parser.add_argument("--job", help="only records of this job (id or its prefix)")
    parser.add_argument("--kind", help="only records of this job kind")
    parser.add_argument("--request", help="only records of this request id (or its prefix)")
    parser.add_argument("--level", default="DEBUG", type=str.upper, choices=list(LEVELS), help="least level")
    parser.add_argument("--follow", "-f", action="store_true", help="keep reading what is appended to FILE")
    parser.add_argument("--color", choices=("auto", "always", "never"), default="auto")


class Filter(msgspec.Struct, kw_only=True):
    queue: str | None = None
    job: str | None = None
    kind: str | None = None
    request: str | None = None
    level: str = "DEBUG"

    @property
    def any(self) -> bool:
        return any((self.queue, self.job, self.kind, self.request)) or LEVELS[self.level] > LEVELS["DEBUG"]

    def accepts(self, record: dict[str, Any]) -> bool:
        if LEVELS.get(str(record.get("level", "")).upper(), 0) < LEVELS[self.level]:
            return False
        if self.queue and record.get("queue") != self.queue:
            return False
        if self.kind and record.get("kind") != self.kind:
            return False
        if self.job and not str(record.get("job_id", "")).startswith(self.job):
            return False
        return not (self.request and not str(record.get("request_id", "")).startswith(self.request))


def parse(line: str) -> dict[str, Any] | None:
    """The JSON record of a line, skipping a prefix such as compose's ``worker-llm-1  | ``."""
    start = line.find("{")
    if start < 0:
        return None
    try:
        record = _decode(line[start:].strip())
    except msgspec.DecodeError:
        return None
    return record if "msg" in record and "level" in record else None


def _time(value: Any) -> str:
    try:
        return datetime.fromisoformat(str(value)).strftime("%H:%M:%S.%f")[:-3]
    except ValueError:
        return str(value)[:12]


def render(record: dict[str, Any], *, color: bool = False) -> str:
    level = str(record.get("level", "")).upper()
    component = str(record.get("component") or record.get("logger") or "")
    ids = " ".join(f"{short}={record[key]}" for key, short in _IDS if record.get(key) not in (None, ""))
    parts = [_time(record.get("ts", "")), f"{level:<7}", f"{component:<8}"]
    if ids:
        parts.append(f"[{ids}]")
    parts.append(str(record.get("msg", "")))
    error = record.get("error")
    if error and str(error) not in parts[-1]:
        parts.append(f"- {error}")
    if not color:
        return " ".join(parts)
    tint = _COLORS.get(level, "")
    parts[0] = f"{_DIM}{parts[0]}{_RESET}"
    parts[1] = f"{tint}{parts[1]}{_RESET}" if tint else parts[1]
    parts[2] = f"{_CYAN}{parts[2]}{_RESET}"
    if ids:
        parts[3] = f"{_DIM}{parts[3]}{_RESET}"
    return " ".join(parts)


def lines_of(stream: TextIO, *, follow: bool, poll: float = 0.25) -> Iterator[str]:
    """The stream's lines; with ``follow``, wait for more at its end (``tail -f``) until interrupted."""
    pending = ""
    while True:
        chunk = stream.readline()
        if chunk:
            pending += chunk
            if pending.endswith("\n"):
                yield pending.rstrip("\n")
                pending = ""
            continue
        if not follow:
            if pending:
                yield pending
            return
        time.sleep(poll)


def show(lines: Iterable[str], keep: Filter, out: TextIO, *, color: bool = False) -> int:
    """Write the readable form of the lines ``keep`` accepts; returns how many were written."""
    shown = 0
    for line in lines:
        record = parse(line)
        if record is None:
            if keep.any or not line.strip():
                continue
            text = line
        elif keep.accepts(record):
            text = render(record, color=color)
        else:
            continue
        out.write(text + "\n")
        out.flush()
        shown += 1
    return shown


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    keep = Filter(queue=args.queue, job=args.job, kind=args.kind, request=args.request, level=args.level)
    color = args.color == "always" or (args.color == "auto" and out.isatty())
    try:
        if args.file == "-":
            show(lines_of(sys.stdin, follow=False), keep, out, color=color)
        else:
            with open(args.file, encoding="utf-8", errors="replace") as stream:
                show(lines_of(stream, follow=args.follow), keep, out, color=color)
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # `| head`
        return 0
    except FileNotFoundError:
        print(f"xenios-ai logs: no such file: {args.file}", file=sys.stderr)
        return 2
    return 0
