"""What a population means: Rashomon sets, multiplicity, flatness analysis.

Not built yet: this package lands with issue #3.
"""
