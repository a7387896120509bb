/*
 * Switchyard plugin ABI, version 1.0 — the C view of plugin-api/src/abi.rs.
 *
 * A plugin is a shared library exporting one function:
 *
 *     const SyPluginDescriptor *switchyard_plugin_entry_v1(void);
 *
 * Rules (see abi.rs for the full text):
 *  - strings are (pointer, length) pairs of UTF-8 or JSON, borrowed for the
 *    duration of one call; the receiver copies what it keeps;
 *  - each side frees only what it allocated;
 *  - both structs start with struct_size: a minor version adds fields at the
 *    end, and each side reads only what the other's struct_size covers;
 *  - the host never calls two lifecycle functions of one instance at once;
 *  - host callbacks are thread-safe and never block.
 */
#ifndef SWITCHYARD_PLUGIN_H
#define SWITCHYARD_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SY_ABI_MAJOR 1
#define SY_ABI_MINOR 2

/* Lifecycle call results. */
#define SY_STATUS_OK 0
#define SY_STATUS_ERROR 1
#define SY_STATUS_PANIC 2

/* emit() results. */
#define SY_EMIT_OK 0
#define SY_EMIT_UNKNOWN_TYPE 1
#define SY_EMIT_INVALID_PAYLOAD 2
#define SY_EMIT_BACKPRESSURE 3
#define SY_EMIT_STOPPED 4
/* ABI 1.2: the envelope would be over server.max_event_bytes (plugins built
 * for 1.0 or 1.1 get SY_EMIT_INVALID_PAYLOAD instead). */
#define SY_EMIT_TOO_LARGE 5

/* Roles. */
#define SY_ROLE_PRODUCER 1
#define SY_ROLE_SINK 2
#define SY_ROLE_BOTH 3

/* Log levels. */
#define SY_LOG_ERROR 1
#define SY_LOG_WARN 2
#define SY_LOG_INFO 3
#define SY_LOG_DEBUG 4
#define SY_LOG_TRACE 5

/* Reply kinds. */
#define SY_REPLY_ERROR 1
#define SY_REPLY_EVENT_TYPES 2

/* A borrowed string; ptr may be NULL when len is 0. */
typedef struct SyStr {
    const uint8_t *ptr;
    size_t len;
} SyStr;

/* Where a call hands text back to its caller (copied before write returns). */
typedef struct SyReply {
    void *ctx;
    void (*write)(void *ctx, uint32_t kind, SyStr text);
} SyReply;

/* Callbacks the host lends a started instance; valid for the process. */
typedef struct SyHostVtable {
    size_t struct_size;
    const void *ctx;
    int32_t (*emit)(const void *ctx, SyStr event_type, SyStr payload_json, SyStr correlation_id);
    void (*log)(const void *ctx, uint32_t level, SyStr message);
    void (*report_failure)(const void *ctx, SyStr message);
    /* Since 1.1: the config file's folder (absolute); relative file paths in
     * the plugin's table resolve against it. Read it only when struct_size
     * covers it. */
    SyStr config_dir;
} SyHostVtable;

/* What the entry function returns; must live as long as the library. */
typedef struct SyPluginDescriptor {
    size_t struct_size;
    uint32_t abi_major;
    uint32_t abi_minor;
    SyStr name;
    SyStr version;
    uint32_t role;
    SyStr event_types_json;
    int32_t (*create)(SyStr config_json, const SyReply *reply, void **out_instance);
    int32_t (*start)(void *instance, const SyHostVtable *host, const SyReply *reply);
    int32_t (*deliver)(void *instance, SyStr event_json);
    int32_t (*stop)(void *instance);
    void (*destroy)(void *instance);
} SyPluginDescriptor;

/* The entry symbol's name for this major version. */
#define SY_ENTRY_SYMBOL "switchyard_plugin_entry_v1"

typedef const SyPluginDescriptor *(*SyEntryFn)(void);

/* The one function a plugin exports (ABI major version 1). */
const SyPluginDescriptor *switchyard_plugin_entry_v1(void);

/* Builds an SyStr from a string literal (C99 compound literal: C only). */
#define SY_STR(s) ((SyStr){(const uint8_t *)(s), sizeof(s) - 1})

#ifdef __cplusplus
}
#endif

#endif /* SWITCHYARD_PLUGIN_H */
