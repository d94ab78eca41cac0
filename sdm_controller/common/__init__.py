"""The shared vocabulary below every part: FR3 facts, joint maps, image conversions, statistics,
parameter specs, rejection reasons and status reports. Nothing here imports another part of the
package (only ``sdm_controller.errors``), so the cores, the nodes and the tools can all use it."""
