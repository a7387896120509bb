/*
 * Prints the layout of every struct in switchyard_plugin.h and the value of
 * every constant it defines, one fact per line:
 *
 *     sizeof SyStr 16
 *     alignof SyStr 8
 *     offsetof SyStr.len 8
 *     sizeof SyStr.len 8
 *     define SY_ABI_MAJOR 1
 *
 * tests/it/c_header.rs compiles this file as C99, C11 and C++, runs it, and
 * compares each line with the Rust definitions in src/abi.rs.
 */
#include <stdio.h>

#include "switchyard_plugin.h"
#include "switchyard_plugin.h" /* the include guard must make this harmless */

#if defined(__cplusplus)
#define SY_ALIGNOF(t) alignof(t)
#elif defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
#define SY_ALIGNOF(t) _Alignof(t)
#else
#define SY_ALIGNOF(t) offsetof(struct { char c; t x; }, x)
#endif

#define STRUCT(t)                                                        \
    printf("sizeof %s %lu\n", #t, (unsigned long)sizeof(t));             \
    printf("alignof %s %lu\n", #t, (unsigned long)SY_ALIGNOF(t))

#define FIELD(t, f)                                                      \
    printf("offsetof %s.%s %lu\n", #t, #f, (unsigned long)offsetof(t, f)); \
    printf("sizeof %s.%s %lu\n", #t, #f, (unsigned long)sizeof(((t *)0)->f))

#define DEFINE(name) printf("define %s %lld\n", #name, (long long)(name))

int main(void) {
    STRUCT(SyStr);
    FIELD(SyStr, ptr);
    FIELD(SyStr, len);

    STRUCT(SyReply);
    FIELD(SyReply, ctx);
    FIELD(SyReply, write);

    STRUCT(SyHostVtable);
    FIELD(SyHostVtable, struct_size);
    FIELD(SyHostVtable, ctx);
    FIELD(SyHostVtable, emit);
    FIELD(SyHostVtable, log);
    FIELD(SyHostVtable, report_failure);
    FIELD(SyHostVtable, config_dir);

    STRUCT(SyPluginDescriptor);
    FIELD(SyPluginDescriptor, struct_size);
    FIELD(SyPluginDescriptor, abi_major);
    FIELD(SyPluginDescriptor, abi_minor);
    FIELD(SyPluginDescriptor, name);
    FIELD(SyPluginDescriptor, version);
    FIELD(SyPluginDescriptor, role);
    FIELD(SyPluginDescriptor, event_types_json);
    FIELD(SyPluginDescriptor, create);
    FIELD(SyPluginDescriptor, start);
    FIELD(SyPluginDescriptor, deliver);
    FIELD(SyPluginDescriptor, stop);
    FIELD(SyPluginDescriptor, destroy);

    printf("sizeof SyEntryFn %lu\n", (unsigned long)sizeof(SyEntryFn));

    DEFINE(SY_ABI_MAJOR);
    DEFINE(SY_ABI_MINOR);

    DEFINE(SY_STATUS_OK);
    DEFINE(SY_STATUS_ERROR);
    DEFINE(SY_STATUS_PANIC);

    DEFINE(SY_EMIT_OK);
    DEFINE(SY_EMIT_UNKNOWN_TYPE);
    DEFINE(SY_EMIT_INVALID_PAYLOAD);
    DEFINE(SY_EMIT_BACKPRESSURE);
    DEFINE(SY_EMIT_STOPPED);
    DEFINE(SY_EMIT_TOO_LARGE);

    DEFINE(SY_ROLE_PRODUCER);
    DEFINE(SY_ROLE_SINK);
    DEFINE(SY_ROLE_BOTH);

    DEFINE(SY_LOG_ERROR);
    DEFINE(SY_LOG_WARN);
    DEFINE(SY_LOG_INFO);
    DEFINE(SY_LOG_DEBUG);
    DEFINE(SY_LOG_TRACE);

    DEFINE(SY_REPLY_ERROR);
    DEFINE(SY_REPLY_EVENT_TYPES);

    printf("define SY_ENTRY_SYMBOL %s\n", SY_ENTRY_SYMBOL);

#ifndef __cplusplus
    {
        /* SY_STR (a C99 compound literal) borrows a literal without its NUL. */
        SyStr s = SY_STR("hello");
        printf("SY_STR len %lu\n", (unsigned long)s.len);
    }
#endif
    return 0;
}
