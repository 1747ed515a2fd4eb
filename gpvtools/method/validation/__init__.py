"""Psychometric checks of measured values (gpv-validate; paper §3.2, §4.1, §5.2, App. C, D.4).

checks holds one function per check, records in and the report out (stability, construct, concurrent,
predictive, accuracy, probe); the modules of those names hold each check's statistics on arrays, and
probe's pieces are probe_data, probe_splits and probe_training. records reads JSONL inputs, figures
and plots draw the --plot figures.
"""
