"""What a population means: Rashomon sets, multiplicity and flatness analysis (issue #3; not built yet)."""
