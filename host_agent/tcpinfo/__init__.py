"""TCP health from the kernel: per-connection ``tcp_info`` read with sock_diag (``diag.py``)."""
