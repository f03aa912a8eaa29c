"""Decoder chatter on stderr, turned into counted log lines.

libjpeg prints warnings such as `Corrupt JPEG data: premature end of data segment` with
fprintf(stderr) from inside TensorFlow's decoder threads, and libtiff does the same from Pillow's:
no file name, no prefix, and `--quiet` cannot stop them, because they never pass through Python.
While a run decodes, file descriptor 2 therefore points into a pipe read by a small filter
process: a decoder's line becomes one log line (`decoder said: ...`, hidden by `--quiet`) and is
counted for the summary's `warnings`; everything else, our own log lines, a progress bar and any
real error, goes on to the real stderr byte for byte. The filter is a process, not a thread, so
that an abort's last words still reach stderr after this process is gone. Which file a line is
about cannot be known: TensorFlow decodes several files at once on its own threads.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from typing import Iterator

# The messages of libjpeg (jerror.h) and libtiff that decoders print on their own, as warnings
# or just before they fail a file (which then gets its error row anyway).
# libtiff's lines are "<function>: <message>", e.g. "_tiffReadProc: Invalid Read at loc 3309"
# or "Fax4Decode: Bad code word at line 27".
DECODER_LINE = (r"^(Corrupt JPEG data|Premature end of JPEG file|Improper call to JPEG library|"
                r"Invalid SOS parameters|Inconsistent progression sequence|Warning: unknown JFIF|"
                r"Unsupported marker type|Invalid JPEG file structure|Bogus |Huffman table|"
                r"Input file read error|libpng (warning|error)|Defined set_get_field_type|"
                r"\w*(tiff|TIFF|Decode|Encode|JPEGLib|Fax\d)\w*: |\S+\.tiff?: )")

_FILTER = r'''
import json, os, re, select, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)  # the run decides when to stop; EOF ends this
signal.signal(signal.SIGTERM, signal.SIG_IGN)
pattern, log_format, quiet = re.compile(sys.argv[1].encode()), sys.argv[2], sys.argv[3] == "1"
out, count, pending = sys.stderr.buffer, 0, b""
def emit(line):
    global count
    count += 1
    if quiet:
        return
    text = line.decode("utf-8", "replace").strip()
    if log_format == "json":
        out.write(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "level": "info", "message": "decoder said: " + text}).encode() + b"\n")
    else:
        out.write(b"batch-infer: decoder said: " + text.encode() + b"\n")
while True:
    chunk = os.read(0, 65536)
    if not chunk:
        break
    pending += chunk
    *lines, pending = pending.split(b"\n")
    for line in lines:
        if pattern.match(line):
            emit(line)
        else:
            out.write(line + b"\n")
    # libtiff writes a line in pieces; a partial line that stays partial for a moment is someone
    # else's (a progress bar's update) and goes on as it is.
    if pending and not select.select([0], [], [], 0.05)[0]:
        out.write(pending)
        pending = b""
    out.flush()
if pending:
    emit(pending) if pattern.match(pending) else out.write(pending)
out.flush()
print(count)
'''


class Counter:
    """How many decoder lines the filter turned into log lines; known once the block ends."""

    def __init__(self):
        self.lines: int | None = 0


@contextlib.contextmanager
def decoder_lines_logged(log_format: str = "text", quiet: bool = False) -> Iterator[Counter]:
    """Within the block, C-level lines on stderr that decoders print are log lines and counted.

    Does nothing where stderr is not a file descriptor to redirect, or with BATCH_INFER_DEBUG set.
    """
    counter = Counter()
    try:
        sys.stderr.flush()
        original = os.dup(2)
    except (OSError, ValueError):
        yield counter
        return
    if os.environ.get("BATCH_INFER_DEBUG"):
        os.close(original)
        yield counter
        return
    try:
        child = subprocess.Popen([sys.executable, "-I", "-S", "-c", _FILTER, DECODER_LINE, log_format,
                                  "1" if quiet else "0"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=original, start_new_session=True)
    except OSError:
        os.close(original)
        yield counter
        return
    os.dup2(child.stdin.fileno(), 2)
    child.stdin.close()
    child.stdin = None  # fd 2 is the pipe's only write end now
    try:
        yield counter
    finally:
        sys.stderr.flush()
        os.dup2(original, 2)  # the pipe's last write end closes: the filter drains and exits
        os.close(original)
        try:  # a process started meanwhile may hold the pipe open: then the count stays unknown
            output, _ = child.communicate(timeout=10)
            counter.lines = int(output.strip() or 0)
        except subprocess.TimeoutExpired:
            counter.lines = None
