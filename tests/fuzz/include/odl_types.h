/* Stand-in for kernels_c/include/odl_types.h in the native fuzz build. */
#define ODL_PRECISION_BITS 32
