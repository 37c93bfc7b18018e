#!/usr/bin/env python3
"""bench/api.d/server_sql.py BINARY SYMBOL — prints the NUL-terminated string
constant SYMBOL (e.g. mf_store_sql_devices, declared in server/store.h) as it
is compiled into BINARY, so bench/api sends PostgreSQL exactly the SQL the
server sends. Uses nm (address, size) and readelf (section file offsets)."""
import subprocess
import sys


def main():
    binary, symbol = sys.argv[1], sys.argv[2]
    addr = size = None
    for line in subprocess.run(["nm", "-S", "--defined-only", binary], check=True,
                               capture_output=True, text=True).stdout.splitlines():
        f = line.split()
        if len(f) == 4 and f[3] == symbol:
            addr, size = int(f[0], 16), int(f[1], 16)
    if addr is None:
        sys.exit(f"server_sql.py: {binary} has no symbol {symbol}")
    for line in subprocess.run(["readelf", "-SW", binary], check=True,
                               capture_output=True, text=True).stdout.splitlines():
        f = line.replace("[ ", "[").split()
        if len(f) < 6 or not f[0].startswith("[") or f[0] == "[Nr]":
            continue
        try:
            sec_addr, sec_off, sec_size = int(f[3], 16), int(f[4], 16), int(f[5], 16)
        except ValueError:
            continue
        if f[2] != "NOBITS" and sec_addr <= addr and addr + size <= sec_addr + sec_size:
            with open(binary, "rb") as fh:
                fh.seek(sec_off + addr - sec_addr)
                data = fh.read(size)
            sys.stdout.write(data.split(b"\0", 1)[0].decode() + "\n")
            return
    sys.exit(f"server_sql.py: {symbol} is in no file-backed section of {binary}")


main()
