"""``deltacd review``: review a run's objects in the web map, or write the next ones to review for QGIS.

Serve RUN_DIR's web map with a review mode on this machine (127.0.0.1, a free port unless --port, a secret token
in the printed URL): click an object and answer change / no change / skip (damage runs: the grade 0-3), or press
c / n / s, 0-3, space for the next object the classifier most wants reviewed. Every answer is saved at once to
RUN_DIR/review.gpkg; Ctrl+C stops the server. With --suggest N -o FILE.gpkg, no server: the N objects to review
next as polygons with an empty integer field label, styled for QGIS; fill it in, then deltacd refine.

API: :class:`deltacd.review.server.ReviewServer`, :func:`deltacd.review.refine.write_suggestions`.
"""

from __future__ import annotations

import argparse
import signal


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="output folder of deltacd detect or damage")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one)")
    p.add_argument("--reviewer", default="", help="name recorded with every answer")
    p.add_argument("--suggest", type=int, metavar="N", help="no server: write the N objects to review next to -o")
    p.add_argument("-o", "--out", metavar="FILE.gpkg", help="the suggestions GeoPackage (with --suggest)")
    p.add_argument("--overwrite", action="store_true", help="replace FILE.gpkg (with --suggest)")
    p.add_argument("--embeddings", nargs="?", const="efficientnet_lite0:imagenet", metavar="SPEC",
                   help="add a pretrained encoder's view of each object to its features (detect runs; default encoder "
                        "efficientnet_lite0:imagenet, weights installed with deltacd; 10-15x the features' time on a CPU; "
                        "paid on building changes only, docs/benchmarks.md section 13)")


def run(args: argparse.Namespace) -> int:
    from deltacd.errors import InputError

    if args.suggest is not None:
        from deltacd.review.refine import write_suggestions

        if not args.out:
            raise InputError("--suggest N: give the file to write, -o FILE.gpkg")
        out = write_suggestions(args.run_dir, args.suggest, args.out, overwrite=args.overwrite,
                                embeddings=args.embeddings)
        print(f"{args.suggest} objects to review in {out}: fill in label, then deltacd refine {args.run_dir} "
              f"--labels {out} -o OUT")
        return 0
    if args.out:
        raise InputError("-o FILE.gpkg goes with --suggest N; without --suggest, review serves the web map")
    from deltacd.review.server import ReviewServer

    server = ReviewServer(args.run_dir, host=args.host, port=args.port, reviewer=args.reviewer,
                          embeddings=args.embeddings)
    print(f"review {args.run_dir}: open {server.url} (answers go to {server.store}; Ctrl+C to stop)", flush=True)
    # SIGINT stops the server even when it was started as a background job, which inherits SIGINT ignored
    # (`kill -INT PID`, a supervisor's stop); a terminal's Ctrl+C reaches only its foreground job anyway
    signal.signal(signal.SIGINT, signal.default_int_handler)
    server.serve()  # returns on Ctrl+C or SIGTERM, once the answer being written is saved
    print(f"review server stopped; {server.session.counts()['reviewed']} objects reviewed in {server.store}", flush=True)
    return 0
