"""One-step distillation of a teacher artifact, and the teacher-free one-step baselines (regression,
MeanFlow); importing the package registers the built-in methods."""

from sdm_controller.distill import consistency, distribution_matching, meanflow, regression  # noqa: F401 (they register themselves)
