"""`make bench` (`python -m scripts.bench`): vfs and its competitors on the same data.

The package owns the benchmark and nothing in vfs depends on it:
- `__main__`: the command line, the run loop and the report files;
- `rows`: every row declared once (id, function, run order, title, figures, goals);
- `read`, `version`, `epoch`, `meta`: the functions that measure the rows;
- `torchjobs`: the PyTorch workloads (DataLoader epochs, s3torchconnector reads), run
  as a process of their own;
- `ctx`: what rows share (source tree, stores, DVC repository), built on first use;
- `env`: the machine: S3 server, mounts, processes, and their clean-up;
- `work`: the workloads the competitors run (dd, find, readers, DVC);
- `data`: the seeded, deterministic data sets (v1/v2, the images, the wide directory);
- `report`: figures, goals, verdicts, the tables and charts.
"""
