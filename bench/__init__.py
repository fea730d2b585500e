"""Benchmarks: our registry on the local emulator stack side by side with CNCF distribution.

`python -m bench` (or `make bench`) starts everything it measures on loopback, in a temporary folder:
Azurite and the Cosmos DB emulator (`services.devhost.stack.LocalStack`), our API
(`python -m services.devhost serve`) and the reference peer, Debian's `docker-registry` (CNCF distribution
2.8.2) with a config of its own (filesystem storage). It alternates ours and the peer within each run,
repeats every figure (`--runs`, at least 3 for a report), and writes `bench/results/<timestamp>.json` and
`.md`. Every process it started is stopped on the way out, also on Ctrl-C or SIGTERM.

    processes.py   the servers it starts and stops, and an RSS sampler of /proc/<pid>/status
    loadgen.py     a small asyncio load generator on aiohttp (HEAD and GET, fixed duration, p50/p99)
    workloads.py   image layouts, skopeo push/pull, seeding tags and repositories, paging
    storage.py     the physical reference: raw Azurite upload/download (Storage SDK) and curl via SAS
    report.py      medians, ratios, targets; JSON and the Markdown table
    cli.py         the command line and the order of the phases

`python -m bench --quick` is the smoke run (small sizes, one run, short durations; under a minute).
"""
