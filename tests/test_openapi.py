"""The OpenAPI spec and the server's routing table name the same routes.
Usage: test_openapi.py PATH_TO_LTVD PATH_TO_SPEC"""
import re
import subprocess
import sys


def spec_routes(path):
    """(METHOD, path) pairs under `paths:`, read by indentation (no YAML
    library needed: paths sit at two spaces, methods at four)."""
    routes, current, in_paths = set(), None, False
    for line in open(path, encoding="utf-8"):
        if re.match(r"^\S", line):
            in_paths = line.startswith("paths:")
            continue
        if not in_paths:
            continue
        m = re.match(r"^  (/\S*):\s*$", line)
        if m:
            current = m.group(1)
            continue
        m = re.match(r"^    (get|post|put|delete|patch):", line)
        if m and current:
            routes.add((m.group(1).upper(), current))
    return routes


def main():
    ltvd, spec = sys.argv[1], sys.argv[2]
    out = subprocess.run([ltvd, "--routes"], capture_output=True, text=True, check=True).stdout
    served = {tuple(line.split(" ", 1)) for line in out.splitlines() if line.strip()}
    documented = spec_routes(spec)
    missing_in_spec = served - documented
    missing_in_server = documented - served
    ok = not missing_in_spec and not missing_in_server and len(served) >= 10
    for r in sorted(missing_in_spec):
        print("served but not documented:", *r)
    for r in sorted(missing_in_server):
        print("documented but not served:", *r)
    print(f"{len(served)} routes served, {len(documented)} documented")
    print("1 passed, 0 failed" if ok else "0 passed, 1 failed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
