#!/usr/bin/env python3
"""Groups the self time of a flat perf report by component.

Input: the output of `perf report --stdio --no-children -g none --sort dso,sym --percent-limit 0`
(lines "  12.34%  DSO  [.] SYMBOL", kernel symbols marked [k]). Each symbol goes to the FIRST category whose
pattern matches "DSO SYMBOL"; the patterns are heuristics over Rust/libc/kernel symbol names, so the groups are
approximate. Prints one markdown table (category, self %, top symbols) sorted by self %.
Usage: scripts/perf-group.py FLAT_REPORT [TOP_SYMBOLS_PER_GROUP]
"""
import re
import sys
from collections import defaultdict

CATEGORIES = [
    ("crc32c", r"crc32c"),
    ("serde / bincode (encode, decode, size)", r"bincode|serde"),
    ("memcpy / memmove / memset (user)", r"\[\.\].*(memcpy|memmove|memset|memcmp)"),
    ("allocator (malloc / free / realloc)", r"\[\.\].*(malloc|_int_free|cfree|\bfree\b|realloc|__rdl_|__rust_alloc|__rust_dealloc|alloc::raw_vec|tcache|arena)"),
    ("openraft core", r"openraft"),
    ("tokio runtime / scheduler", r"\[\.\].*(tokio::|mio::|parking_lot|std::sys::.*futex|crossbeam)"),
    ("runnel code (broker, protocol, storage)", r"\[\.\].*runnel"),
    ("bytes / tokio-util codec", r"\[\.\].*(bytes::|tokio_util)"),
    ("kernel: copy to/from user (socket, page cache)", r"\[k\].*(copy_user|copy_to_user|copy_from_user|copy_page|rep_movs|memcpy|memmove|_copy_to_iter|_copy_from_iter)"),
    ("kernel: fsync / filesystem / block", r"\[k\].*(ext4|jbd2|fsync|fdatasync|filemap|blk_|bio_|iomap|writeback|submit_|folio|page_cache|pagecache|xfs|virtblk|mpage|generic_perform_write)"),
    ("kernel: TCP / loopback networking", r"\[k\].*(tcp|\bip_|skb|sock|netif|__dev_queue|loopback|net_rx|napi|inet|__sys_sendto|recvmsg|sendmsg|_raw_spin_unlock_bh)"),
    ("kernel: scheduler, futex, epoll, syscall entry", r"\[k\].*(schedule|futex|epoll|ep_poll|__switch|finish_task_switch|syscall|entry_SYSCALL|try_to_wake_up|ttwu|enqueue|dequeue|update_curr|pick_next|native_sched|hrtimer|timerfd|wake_up|select_task|psi_|restore_regs|irq|__x64_sys|exit_to_user)"),
    ("kernel: other", r"\[k\]"),
    ("libc / std other", r"libc|libstd|std::|core::"),
    ("other user", r"."),
]

LINE = re.compile(r"^\s*([0-9.]+)%\s+(\S+)\s+(\[[.k]\])\s+(.*)$")


def main() -> None:
    path = sys.argv[1]
    top_n = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    compiled = [(name, re.compile(p)) for name, p in CATEGORIES]
    totals = defaultdict(float)
    syms = defaultdict(list)
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = LINE.match(line)
            if not m:
                continue
            pct, dso, kind, sym = float(m.group(1)), m.group(2), m.group(3), m.group(4).strip()
            key = f"{dso} {kind} {sym}"
            for name, rx in compiled:
                if rx.search(key):
                    totals[name] += pct
                    syms[name].append((pct, sym))
                    break
    print("| component | self % | top symbols (self %) |")
    print("|---|---|---|")
    for name, total in sorted(totals.items(), key=lambda kv: -kv[1]):
        top = sorted(syms[name], reverse=True)[:top_n]
        shown = "; ".join(f"`{s[:70]}` {p:.1f}" for p, s in top)
        print(f"| {name} | {total:.1f} | {shown} |")


if __name__ == "__main__":
    main()
