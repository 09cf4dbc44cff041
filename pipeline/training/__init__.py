"""The training engine behind `artgan train`: distributed set-up, checkpoints, the step loop."""
