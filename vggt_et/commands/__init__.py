"""One module per `vggt-et` command: the body behind each click declaration in `vggt_et/cli.py` (info,
compile, fisher, audit, run, compare, bench, demo, train). A body checks its arguments, calls the rooms that
do the work and prints tables; it holds no algorithm.

The top of the house: it may import every room but `cli`; nothing imports it but `cli`.
"""
