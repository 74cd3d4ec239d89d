"""Command line: ``fastrms demo`` (also ``python -m fastrms demo``)."""

from __future__ import annotations

import argparse
import sys


def demo(args) -> int:
    from . import experiments as ex

    t_all = ex.ax_identity()
    print("AX = I (the notebook seed's 5x5 matrix), X0 = 0, 300 steps, lr = 1e-3")
    print(f"| {'method':<18} | {'final loss':>12} | {'seconds':>8} |")
    print(f"|{'-' * 20}|{'-' * 14}|{'-' * 10}|")
    for name, r in t_all.items():
        print(f"| {name:<18} | {r['final']:>12.6g} | {r['seconds']:>8.3f} |")
    print("(seconds include Numba compilation on the first run; cached on disk after that)")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fastrms", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="reproduce the seeds' experiments")
    p.add_argument("--out", default="fastrms-demo", help="output folder for figures and tables")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=demo)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
