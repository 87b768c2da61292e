/* The part of QEMU's TCG plugin interface that odl's plugins use, declared here because Debian ships QEMU without
 * its plugin header. Written from QEMU's plugin documentation (docs/devel/tcg-plugins.rst); the layout and
 * signatures are those of plugin API version 4 (QEMU 9.2 to 10.0), and QEMU checks `qemu_plugin_version` when it
 * loads a plugin, so a QEMU with another API refuses the plugin with a message instead of misbehaving.
 * Functions are resolved against the qemu-system binary when the plugin is loaded. */
#ifndef ODL_QEMU_PLUGIN_ABI_H
#define ODL_QEMU_PLUGIN_ABI_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ODL_QEMU_PLUGIN_API 4
#define ODL_PLUGIN_EXPORT __attribute__((visibility("default")))

typedef uint64_t qemu_plugin_id_t;
typedef uint32_t qemu_plugin_meminfo_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;

typedef struct {
  const char *target_name;
  struct { int min, cur; } version;
  bool system_emulation;
  union { struct { int smp_vcpus, max_vcpus; } system; };
} qemu_info_t;

enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_CB_R_REGS, QEMU_PLUGIN_CB_RW_REGS };
enum qemu_plugin_mem_rw { QEMU_PLUGIN_MEM_R = 1, QEMU_PLUGIN_MEM_W, QEMU_PLUGIN_MEM_RW };
enum qemu_plugin_mem_value_type { QEMU_PLUGIN_MEM_VALUE_U8, QEMU_PLUGIN_MEM_VALUE_U16, QEMU_PLUGIN_MEM_VALUE_U32,
                                  QEMU_PLUGIN_MEM_VALUE_U64, QEMU_PLUGIN_MEM_VALUE_U128 };
typedef struct {
  enum qemu_plugin_mem_value_type type;
  union { uint8_t u8; uint16_t u16; uint32_t u32; uint64_t u64; struct { uint64_t low, high; } u128; } data;
} qemu_plugin_mem_value;

typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_vcpu_mem_cb_t)(unsigned int vcpu_index, qemu_plugin_meminfo_t info, uint64_t vaddr,
                                          void *userdata);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *insn, qemu_plugin_vcpu_udata_cb_t cb,
                                            enum qemu_plugin_cb_flags flags, void *userdata);
void qemu_plugin_register_vcpu_mem_cb(struct qemu_plugin_insn *insn, qemu_plugin_vcpu_mem_cb_t cb,
                                      enum qemu_plugin_cb_flags flags, enum qemu_plugin_mem_rw rw, void *userdata);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
size_t qemu_plugin_insn_data(const struct qemu_plugin_insn *insn, void *dest, size_t len);
size_t qemu_plugin_insn_size(const struct qemu_plugin_insn *insn);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *insn);
bool qemu_plugin_mem_is_store(qemu_plugin_meminfo_t info);
unsigned int qemu_plugin_mem_size_shift(qemu_plugin_meminfo_t info);
qemu_plugin_mem_value qemu_plugin_mem_get_value(qemu_plugin_meminfo_t info);
void qemu_plugin_outs(const char *string);

/* Registers. The array types are glib's (GArray, GByteArray: a data pointer, then a length), which QEMU has loaded;
 * a plugin only reads their first two fields and allocates byte arrays through glib itself. */
struct qemu_plugin_register;
typedef struct { char *data; unsigned int len; } odl_g_array;
typedef struct { uint8_t *data; unsigned int len; } odl_g_byte_array;
typedef struct { struct qemu_plugin_register *handle; const char *name; const char *feature; } qemu_plugin_reg_descriptor;
typedef void (*qemu_plugin_vcpu_simple_cb_t)(qemu_plugin_id_t id, unsigned int vcpu_index);
void qemu_plugin_register_vcpu_init_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_simple_cb_t cb);
void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *tb, qemu_plugin_vcpu_udata_cb_t cb,
                                          enum qemu_plugin_cb_flags flags, void *userdata);
odl_g_array *qemu_plugin_get_registers(void);
int qemu_plugin_read_register(struct qemu_plugin_register *handle, odl_g_byte_array *buf);
odl_g_byte_array *g_byte_array_new(void);
odl_g_byte_array *g_byte_array_set_size(odl_g_byte_array *array, unsigned int length);
#endif
