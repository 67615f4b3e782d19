"""The CIFAR reproduction benchmark (``benchmarks/reproduce_cifar.py``), split by job:
``plan`` (which runs, their recipe and commands), ``runs`` (training a run, its lock, the
ledger of finished runs), ``measure`` (accuracy and flatness of finished weights),
``tuning`` (the rho sweeps and the tuned rows), ``report`` (tables and figure) and
``bench`` (the order in which the script calls them)."""
