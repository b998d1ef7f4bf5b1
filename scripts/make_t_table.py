"""Print the 97.5 % Student-t quantiles for 1..30 degrees of freedom that ``edgeflow/student_t.py`` ships.

Run ``python scripts/make_t_table.py`` and paste the output into ``_T975``: the values come from
``scipy.stats.t.ppf``, so the gateway needs no scipy import to compute a confidence interval.
"""

from scipy.stats import t

print("(" + ", ".join(f"{float(t.ppf(0.975, df))!r}" for df in range(1, 31)) + ")")
