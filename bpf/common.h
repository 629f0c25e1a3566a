/* Shared definitions for the audit-collector BPF programs.
 *
 * No kernel struct layout from headers is used here: every member offset comes from the
 * running kernel's BTF and is passed in as an OFF_* constant (collector/offsets.py). Kernel
 * memory is read through those offsets with bpf_probe_read_kernel. Only ABI-stable things
 * (syscall tracepoint formats, pt_regs for the uretprobe's return value) come from BCC.
 *
 * Compile-time constants supplied by collector/capture/probes.py:
 *   SELF_TGID          the collector's own pid, never traced (no feedback loop)
 *   HOST_UTS_INUM      PID 1's UTS namespace inode: the nodename is read only when it differs
 *   CGROUP_SUBSYS      -1 for the cgroup v2 hierarchy, else the v1 subsystem id to report
 *   RINGBUF_PAGES, WAKEUP_EVENTS, ARGS_LIMIT, ARGS_BUF, MAX_ARGS, LINE_MAX_BYTES
 * and from the families table (collector/capture/families.py), which also declares every
 * record struct below field by field (a test compares them with what BCC compiles):
 *   KIND_*, LOST_*, LOST_SLOTS, SYSCALL_*, NEW_NS_FLAGS, map sizes (PENDING_EXECS,
 *   NS_PENDING), TASK_COMM_LEN, TTY_NAME_LEN, CGROUP_NAME_LEN, UTS_LEN, FILENAME_LEN,
 *   FAMILY_* (1 for each family compiled in, else 0)
 */

#ifndef PIDTYPE_PGID_ID
#define PIDTYPE_PGID_ID 2
#endif
#ifndef PIDTYPE_SID_ID
#define PIDTYPE_SID_ID 3
#endif

/* pt_regs (for the uretprobe's return value) is the user-space ABI register frame. */
#include <uapi/linux/ptrace.h>

#ifndef BPF_RB_NO_WAKEUP
#define BPF_RB_NO_WAKEUP 1
#define BPF_RB_FORCE_WAKEUP 2
#define BPF_RB_AVAIL_DATA 0
#endif

/* Read a value of `type` at `base + off` in kernel memory; 0 when the read fails. */
#define KREAD(type, base, off)                                                  \
    ({                                                                          \
        type __val = 0;                                                         \
        if (base)                                                               \
            bpf_probe_read_kernel(&__val, sizeof(__val), (char *)(base) + (off)); \
        __val;                                                                  \
    })
#define KPTR(base, off) KREAD(char *, base, off)

struct ns_set {
    u32 pid;               /* the task's active pid namespace */
    u32 pid_for_children;
    u32 mnt;
    u32 net;
    u32 uts;
    u32 ipc;
    u32 user;
    u32 cgroup;
};

struct identity {
    u64 ktime_ns;
    u64 cgroup_id;         /* kernfs id of the reported cgroup */
    /* Process start times (CLOCK_BOOTTIME ns, what /proc/PID/stat's starttime counts in
     * ticks): with the pid they name a process across pid reuse. 0: that process is gone. */
    u64 start_ns;          /* this process (its thread-group leader) */
    u64 parent_start_ns;
    u64 pgid_start_ns;     /* the process group leader */
    u64 sid_start_ns;      /* the session leader */
    u32 pid;               /* tgid, init pid namespace */
    u32 tid;
    u32 ppid;
    u32 vpid;              /* pid in the task's own pid namespace */
    u32 uid, euid, gid, egid;
    u32 auid;              /* login uid; (u32)-1 when unset */
    u32 sessionid;         /* (u32)-1 when unset */
    u32 tty_major, tty_minor;
    s32 tty_index;         /* -1: no controlling tty */
    u32 pgid;              /* process group id, init pid namespace */
    u32 sid;               /* session id (the session leader's pid), init pid namespace */
    u32 pad0;
    struct ns_set ns;
    char comm[TASK_COMM_LEN];
    char tty_name[TTY_NAME_LEN];
    char cgroup_name[CGROUP_NAME_LEN];
    char uts_name[UTS_LEN];
    char pad1[7];
};

BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
/* Failed ring buffer writes per event kind: user space turns growth into events_lost. */
BPF_PERCPU_ARRAY(lost, u64, LOST_SLOTS);
/* Records written on this CPU since it last woke the reader. */
BPF_PERCPU_ARRAY(unwoken, u32, 1);

static __always_inline int is_self(void)
{
    return (bpf_get_current_pid_tgid() >> 32) == SELF_TGID;
}

static __always_inline u32 ns_inum(char *ns_struct, u32 off_inum)
{
    return KREAD(u32, ns_struct, off_inum);
}

static __always_inline void read_namespaces(char *task, struct ns_set *ns)
{
    char *nsproxy = KPTR(task, OFF_TASK_STRUCT_NSPROXY);
    ns->uts = ns_inum(KPTR(nsproxy, OFF_NSPROXY_UTS_NS), OFF_UTS_NAMESPACE_INUM);
    ns->ipc = ns_inum(KPTR(nsproxy, OFF_NSPROXY_IPC_NS), OFF_IPC_NAMESPACE_INUM);
    ns->mnt = ns_inum(KPTR(nsproxy, OFF_NSPROXY_MNT_NS), OFF_MNT_NAMESPACE_INUM);
    ns->net = ns_inum(KPTR(nsproxy, OFF_NSPROXY_NET_NS), OFF_NET_INUM);
#if HAVE_CGROUP_NS
    ns->cgroup = ns_inum(KPTR(nsproxy, OFF_NSPROXY_CGROUP_NS), OFF_CGROUP_NAMESPACE_INUM);
#endif
    ns->pid_for_children =
        ns_inum(KPTR(nsproxy, OFF_NSPROXY_PID_NS_FOR_CHILDREN), OFF_PID_NAMESPACE_INUM);
    char *cred = KPTR(task, OFF_TASK_STRUCT_REAL_CRED);
    ns->user = ns_inum(KPTR(cred, OFF_CRED_USER_NS), OFF_USER_NAMESPACE_INUM);

    /* The active pid namespace is the one of the task's struct pid at its deepest level. */
    char *pid = KPTR(task, OFF_TASK_STRUCT_THREAD_PID);
    u32 level = KREAD(u32, pid, OFF_PID_LEVEL);
    if (level > 31)
        level = 0;
    char *upid = pid + OFF_PID_NUMBERS + level * SIZEOF_UPID;
    ns->pid = ns_inum(KPTR(upid, OFF_UPID_NS), OFF_PID_NAMESPACE_INUM);
}

static __always_inline u32 read_vpid(char *task)
{
    char *leader = KPTR(task, OFF_TASK_STRUCT_GROUP_LEADER);
    char *pid = KPTR(leader ? leader : task, OFF_TASK_STRUCT_THREAD_PID);
    u32 level = KREAD(u32, pid, OFF_PID_LEVEL);
    if (level > 31)
        level = 0;
    return KREAD(u32, pid + OFF_PID_NUMBERS + level * SIZEOF_UPID, OFF_UPID_NR);
}

static __always_inline void read_tty(char *task, struct identity *id)
{
    char *signal = KPTR(task, OFF_TASK_STRUCT_SIGNAL);
    char *tty = KPTR(signal, OFF_SIGNAL_STRUCT_TTY);
    id->tty_index = -1;
    if (!tty)
        return;
    char *driver = KPTR(tty, OFF_TTY_STRUCT_DRIVER);
    id->tty_index = KREAD(s32, tty, OFF_TTY_STRUCT_INDEX);
    id->tty_major = KREAD(u32, driver, OFF_TTY_DRIVER_MAJOR);
    id->tty_minor = KREAD(u32, driver, OFF_TTY_DRIVER_MINOR_START) + id->tty_index;
    bpf_probe_read_kernel_str(id->tty_name, sizeof(id->tty_name), tty + OFF_TTY_STRUCT_NAME);
}

static __always_inline void read_cgroup(char *task, struct identity *id)
{
    char *css_set = KPTR(task, OFF_TASK_STRUCT_CGROUPS);
    char *cgrp;
#if CGROUP_SUBSYS < 0
    cgrp = KPTR(css_set, OFF_CSS_SET_DFL_CGRP);
#else
    char *css = KPTR(css_set, OFF_CSS_SET_SUBSYS + CGROUP_SUBSYS * SIZEOF_CSS_SET_SUBSYS_ELEM);
    cgrp = KPTR(css, OFF_CGROUP_SUBSYS_STATE_CGROUP);
#endif
    char *kn = KPTR(cgrp, OFF_CGROUP_KN);
    id->cgroup_id = KREAD(u64, kn, OFF_KERNFS_NODE_ID);
    char *name = KPTR(kn, OFF_KERNFS_NODE_NAME);
    if (name)
        bpf_probe_read_kernel_str(id->cgroup_name, sizeof(id->cgroup_name), name);
}

static __always_inline void read_creds(char *task, struct identity *id)
{
    char *cred = KPTR(task, OFF_TASK_STRUCT_CRED);
    id->uid = KREAD(u32, cred, OFF_CRED_UID);
    id->euid = KREAD(u32, cred, OFF_CRED_EUID);
    id->gid = KREAD(u32, cred, OFF_CRED_GID);
    id->egid = KREAD(u32, cred, OFF_CRED_EGID);
#if HAVE_LOGINUID
    id->auid = KREAD(u32, task, OFF_TASK_STRUCT_LOGINUID);
#else
    id->auid = (u32)-1;
#endif
#if HAVE_SESSIONID
    id->sessionid = KREAD(u32, task, OFF_TASK_STRUCT_SESSIONID);
#else
    id->sessionid = (u32)-1;
#endif
}

/* When the process `task` belongs to started: its thread-group leader's start. */
static __always_inline u64 process_start(char *task)
{
    char *leader = KPTR(task, OFF_TASK_STRUCT_GROUP_LEADER);
    return KREAD(u64, leader ? leader : task, OFF_TASK_STRUCT_START_BOOTTIME);
}

/* The number of a struct pid in the initial pid namespace. */
static __always_inline u32 pid_number(char *pid)
{
    return KREAD(u32, pid, OFF_PID_NUMBERS + OFF_UPID_NR);
}

/* The start of the process a process-group or session id names (its leader, whose pid it
 * is): the task attached to that struct pid as its PID, if it still exists. */
static __always_inline u64 leader_start(char *pid)
{
    char *first = KPTR(pid, OFF_PID_TASKS);  /* tasks[PIDTYPE_PID].first */
    if (!first)
        return 0;
    return process_start(first - OFF_TASK_STRUCT_PID_LINKS);
}

static __always_inline void read_leaders(char *task, struct identity *id)
{
    char *signal = KPTR(task, OFF_TASK_STRUCT_SIGNAL);
    char *pgrp = KPTR(signal, OFF_SIGNAL_STRUCT_PIDS + PIDTYPE_PGID_ID * sizeof(void *));
    char *session = KPTR(signal, OFF_SIGNAL_STRUCT_PIDS + PIDTYPE_SID_ID * sizeof(void *));
    id->pgid = pid_number(pgrp);
    id->pgid_start_ns = leader_start(pgrp);
    id->sid = pid_number(session);
    id->sid_start_ns = leader_start(session);
}

/* Everything that says who did it and where, read from a task (the current one, or a
 * child just forked). */
static __always_inline void fill_identity_of(char *task, struct identity *id)
{
    id->ktime_ns = bpf_ktime_get_ns();
    id->pid = KREAD(u32, task, OFF_TASK_STRUCT_TGID);
    id->tid = KREAD(u32, task, OFF_TASK_STRUCT_PID);
    id->start_ns = process_start(task);
    char *parent = KPTR(task, OFF_TASK_STRUCT_REAL_PARENT);
    id->ppid = KREAD(u32, parent, OFF_TASK_STRUCT_TGID);
    id->parent_start_ns = process_start(parent);
    read_leaders(task, id);
    id->vpid = read_vpid(task);
    read_creds(task, id);
    read_namespaces(task, &id->ns);
    read_tty(task, id);
    read_cgroup(task, id);
    bpf_probe_read_kernel_str(id->comm, sizeof(id->comm), task + OFF_TASK_STRUCT_COMM);
    if (id->ns.uts != HOST_UTS_INUM) {
        char *uts = KPTR(KPTR(task, OFF_TASK_STRUCT_NSPROXY), OFF_NSPROXY_UTS_NS);
        bpf_probe_read_kernel_str(id->uts_name, sizeof(id->uts_name),
                                  uts + OFF_UTS_NAMESPACE_NODENAME);
    }
}

static __always_inline void fill_identity(struct identity *id)
{
    fill_identity_of((char *)bpf_get_current_task(), id);
}

/* Wake user space once every WAKEUP_EVENTS records per CPU; in between, the collector's
 * poll timer picks records up. A wake-up per event costs ~10 us in the kernel. */
static __always_inline u64 wakeup_flag(void)
{
    u32 key = 0;
    u32 *count = unwoken.lookup(&key);
    if (!count)
        return 0;
    *count += 1;
    if (*count < WAKEUP_EVENTS)
        return BPF_RB_NO_WAKEUP;
    *count = 0;
    return BPF_RB_FORCE_WAKEUP;
}

static __always_inline void count_lost(u32 kind)
{
    u64 *n = lost.lookup(&kind);
    if (n)
        *n += 1;
}

static __always_inline void emit(void *data, u64 size, u32 lost_kind)
{
    if (events.ringbuf_output(data, size, wakeup_flag()) < 0)
        count_lost(lost_kind);
}
