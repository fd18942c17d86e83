# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Quickstart: how arbitrary are the predictions of equally good models?
#
# We train the quickstart population — 128 one-hidden-layer MLPs on `breast_cancer`, 2 learning
# rates × 8 init seeds × 4 minibatch-order seeds × 2 data seeds — through the Python API, then
# ask which test patients get different diagnoses from models that are all about as accurate.
# Open this file in Jupyter with jupytext, or run it as a script: `python examples/quickstart.py`
# (about a minute on a laptop; it writes `results/quickstart/` and `quickstart.png` in the working
# directory).

# %%
# ruff: noqa: B018 (a cell shows its last expression)
from importlib.resources import files

import matplotlib

matplotlib.use("Agg")  # draw to files; in Jupyter, leave this out to see the figure inline
import matplotlib.pyplot as plt
import yaml

import rashomon

# %% [markdown]
# The job ships with rashomon (`jobs/quickstart.yaml` in the repository). `rashomon.run` takes a
# job file or, as here, the same settings as a dict, checked exactly as a file would be. Running
# it again on the same folder resumes: finished models are not trained again.

# %%
job = yaml.safe_load((files("rashomon.jobs") / "quickstart.yaml").read_text())
job["population"]["grid"]["lr"]  # settings are plain Python values: change them here

# %%
results = rashomon.run(job, out="results/quickstart")
results

# %%
results.models[["model_id", "init_seed", "order_seed", "data_seed", "hp_lr", "val_acc"]].head()

# %% [markdown]
# `probabilities(split)` is one array (models, examples, classes); its rows are
# `results.model_ids`, the models with status `ok`.

# %%
probabilities = results.probabilities("test")
probabilities.shape, len(results.model_ids)

# %% [markdown]
# The Rashomon set: the models within ε = 0.01 of the best validation error. Its multiplicity is
# measured on the test split.

# %%
analysis = rashomon.analyze(results, epsilon=0.01)
analysis

# %%
{name: analysis.to_dict()[name] for name in ("rashomon_set_size", "ambiguity", "disagreement")}

# %% [markdown]
# Every per-example measure, with each example's label: the most contested test examples first.

# %%
per_example = analysis.per_example()
per_example.sort_values("disagreement", ascending=False).head(10)

# %% [markdown]
# Multiplicity grows with the number of models looked at, so sets of different sizes are
# compared at equal size. The model-count curve draws k models from the set, 30 times per k.

# %%
curves = analysis.curves()
figure, axes = plt.subplots(1, 2, figsize=(9, 3.2), layout="constrained")
for ax, measure in zip(axes, ("ambiguity", "disagreement"), strict=True):
    part = curves.model_count[curves.model_count["measure"] == measure]
    ax.fill_between(part["size"], part["low"], part["high"], alpha=0.3, label="central 95%")
    ax.plot(part["size"], part["mean"], marker="o", label="mean over draws")
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter("{x:g}")
    ax.set(xlabel="models drawn from the Rashomon set", title=measure)
axes[0].set_ylabel("share of test examples")
axes[1].set_ylabel("chance two models differ")
axes[0].legend()
figure.savefig("quickstart.png", dpi=120)

# %% [markdown]
# Does the learning rate change how arbitrary the predictions are? Each learning rate's models
# get their own Rashomon set; the comparison at equal set size is the fair one.

# %%
by_lr = rashomon.analyze(results, epsilon=0.01, by="hp_lr")
by_lr

# %%
by_lr.at_equal_size.pivot(index="measure", columns="cohort", values="mean")

# %% [markdown]
# The same in one self-contained HTML page, with the cohorts side by side.

# %%
rashomon.report(results, by="hp_lr")
