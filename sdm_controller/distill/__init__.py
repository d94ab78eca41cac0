"""One-step distillation of a teacher artifact; importing the package registers the built-in methods."""

from sdm_controller.distill import consistency, distribution_matching  # noqa: F401 (they register themselves)
