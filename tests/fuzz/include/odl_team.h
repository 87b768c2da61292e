/* Stand-in for the fork/join team header in the native fuzz build: one core. */
static inline int odl_num_cores(void) { return 1; }
