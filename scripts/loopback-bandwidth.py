#!/usr/bin/env python3
"""Physical baseline: loopback TCP bandwidth between two processes, in MB/s (10^6 bytes/s).

Usage: loopback-bandwidth.py [MEGABYTES]  (default 2000). Sends MEGABYTES*10^6 bytes in 1 MiB writes from a
child process to this one over 127.0.0.1 and prints one number: MB/s. Bounded: one transfer, then exit.
"""
import os, socket, sys, time

total = int(float(sys.argv[1]) * 1e6) if len(sys.argv) > 1 else 2_000_000_000
chunk = b"\0" * (1 << 20)
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(1)
port = srv.getsockname()[1]
pid = os.fork()
if pid == 0:
    c = socket.create_connection(("127.0.0.1", port))
    sent = 0
    while sent < total:
        n = min(len(chunk), total - sent)
        c.sendall(chunk[:n] if n < len(chunk) else chunk)
        sent += n
    c.close()
    os._exit(0)
conn, _ = srv.accept()
buf = bytearray(1 << 20)
got = 0
start = time.perf_counter()
while got < total:
    n = conn.recv_into(buf)
    if n == 0:
        break
    got += n
secs = time.perf_counter() - start
os.waitpid(pid, 0)
print(f"{got / secs / 1e6:.0f}")
