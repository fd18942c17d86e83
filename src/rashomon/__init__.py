"""rashomon: train populations of models on Ray and measure how much equally good models disagree.

The package has three layers, each a subpackage: ``rashomon.jobs`` says *what* population to
train, ``rashomon.engine`` *how and where*, ``rashomon.analysis`` *what it means*.
"""
