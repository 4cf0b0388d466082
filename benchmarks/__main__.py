"""``python -m benchmarks`` (``make bench``): placeholder until the benchmarks are written."""

from __future__ import annotations


def main() -> int:
    print("benchmarks: placeholder (nothing measured yet)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
