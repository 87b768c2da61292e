"""`odl compile --deploy int8`: the integer inference program of a QAT checkpoint (docs/quantization.md, "Deploying
int8"). qat_checkpoint.py reads and checks the checkpoint, lower.py turns the traced graph into int8 kernel calls
(kernels_c/int8.c) with batch norm folded into the requantization, plan.py places the tensors, project.py writes the
C project (src/odl.h with odl_predict, the generated program, the kernels and the target's runtime)."""
