"""What a region may publish: statistics, anonymised (DP + minimum cohort), within its budget."""
