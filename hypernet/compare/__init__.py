"""Comparing networks: the pure half of Compare Hypernets, in the order it runs.

step_files.py        which files of a training run's folder to compare (every Nth, the last, the best)
run_records.py       what a run recorded about them: step, validation loss, the best, run_summary.json
grid_plan.py         the grid's plan (rows, columns, cells, labels), the inputs' parsing, the pixel budget
comparison_table.py  the table of network, step, strength and validation loss (plus the sweep summary)

The grid is drawn by image_grid.py; sampling the cells is the node's (through the host's sampler)."""
