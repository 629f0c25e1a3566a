/* exec: every execve/execveat, successful or not, with a bounded argv.
 *
 * sys_enter_* stashes the filename and the argv pointer per thread; the event is completed
 * and emitted either by sched_process_exec (success: the new image and credentials are in
 * place; its old_pid argument finds the stash even when a non-leader thread exec'd) or by
 * sys_exit_* with a negative return (failure). One record per exec, sized to what was
 * captured.
 *
 * Where argv comes from: on success, from the new image (mm->arg_start..arg_end), which
 * the kernel has just written to the new stack, so it is resident: what /proc/PID/cmdline
 * and auditd's EXECVE record show, in one read. The caller's memory is no good source:
 * after fork() a child's pages (string literals in .rodata) are often not mapped yet, and
 * a BPF read cannot fault them in. For a `#!` script the new image's argv is the
 * interpreter's: [interpreter, its optional argument, script path, argv[1:]...]. On
 * failure there is no new image: argv is read from the caller's memory at syscall exit
 * (what the kernel read on the way has been faulted in by then); a read that still fails
 * is flagged (args_fault) and counted.
 */

struct exec_event {
    u32 kind;
    u32 syscall;
    s32 retval;
    u32 argc;              /* arguments seen (bprm->argc on success) */
    u32 args_len;          /* bytes of args[] used: NUL-separated arguments */
    u32 args_truncated;    /* hit MAX_ARGS or ARGS_LIMIT */
    u32 args_fault;        /* reading user memory failed */
    u32 exe_dev;           /* kernel dev_t of the executable's filesystem (success only) */
    u64 exe_ino;           /* the executable's inode number (success only) */
    u32 exe_gen;           /* its i_generation: tells a reused inode number apart */
    u32 script;            /* a `#!` script: the image is its interpreter (success only) */
    u64 argv_addr;         /* the caller's argv and filename pointers, for a failed */
    u64 filename_addr;     /* exec's reads at syscall exit */
    struct identity id;
    char filename[FILENAME_LEN];
    /* ARGS_BUF is ARGS_LIMIT rounded up to a power of two: offsets are masked with it, and
     * each argument may be read whole (up to ARGS_BUF) from any offset below ARGS_LIMIT. */
    char args[2 * ARGS_BUF];
};

BPF_TABLE("lru_hash", u32, struct exec_event, exec_pending, PENDING_EXECS);
/* A read-only zeroed record to initialise stash slots from (too big for the stack). */
BPF_ARRAY(exec_zero, struct exec_event, 1);

static __always_inline u32 min_u32(u32 a, u32 b)
{
    return a < b ? a : b;
}

static __always_inline void read_argv(struct exec_event *e, const char *const *argv)
{
    u32 off = 0;
    u32 argi = 0;

    for (int i = 0; i < MAX_ARGS; i++) {
        const char *arg = 0;
        if (bpf_probe_read_user(&arg, sizeof(arg), &argv[i]) < 0) {
            e->args_fault = 1;
            break;
        }
        if (!arg)
            break;
        if (off >= ARGS_LIMIT) {
            e->args_truncated = 1;
            break;
        }
        long n = bpf_probe_read_user_str(&e->args[off & (ARGS_BUF - 1)], ARGS_BUF, arg);
        if (n <= 0) {
            e->args_fault = 1;
            break;
        }
        argi++;
        off += n;
        if (n == ARGS_BUF) {
            /* This argument alone filled the buffer: it was cut. */
            e->args_truncated = 1;
            break;
        }
    }
    if (argi == MAX_ARGS) {
        const char *more = 0;
        bpf_probe_read_user(&more, sizeof(more), &argv[MAX_ARGS]);
        if (more)
            e->args_truncated = 1;
    }
    if (off > ARGS_LIMIT) {
        off = ARGS_LIMIT;
        e->args_truncated = 1;
    }
    e->argc = argi;
    e->args_len = off;
}

static __always_inline int exec_enter(u32 syscall, const char *filename,
                                      const char *const *argv)
{
    if (is_self())
        return 0;
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u32 zero_key = 0;
    struct exec_event *zero = exec_zero.lookup(&zero_key);
    if (!zero)
        return 0;
    /* A fresh, zeroed slot per thread; a stale one from an exec that never returned is
     * simply overwritten. */
    exec_pending.update(&tid, zero);
    struct exec_event *e = exec_pending.lookup(&tid);
    if (!e)
        return 0;
    e->kind = KIND_EXEC;
    e->syscall = syscall;
    e->argv_addr = (u64)argv;
    e->filename_addr = (u64)filename;
    bpf_probe_read_user_str(e->filename, sizeof(e->filename), filename);
    return 0;
}

/* argv of the new image: NUL-separated strings between mm->arg_start and arg_end. */
static __always_inline void read_image_argv(struct exec_event *e)
{
    char *mm = KPTR((char *)bpf_get_current_task(), OFF_TASK_STRUCT_MM);
    u64 start = KREAD(u64, mm, OFF_MM_STRUCT_ARG_START);
    u64 end = KREAD(u64, mm, OFF_MM_STRUCT_ARG_END);
    if (!start || end <= start) {
        e->args_fault = 1;
        return;
    }
    u64 len = end - start;
    if (len > ARGS_LIMIT) {
        len = ARGS_LIMIT;
        e->args_truncated = 1;
    }
    /* Keep the bound visible to the verifier right before the use. */
    asm volatile("" : "+r"(len));
    if (len > ARGS_BUF)
        return;
    if (bpf_probe_read_user(e->args, len, (void *)start) < 0) {
        e->args_fault = 1;
        return;
    }
    e->args_len = len;
}

static __always_inline void exec_emit(struct exec_event *e, s32 retval)
{
    e->retval = retval;
    fill_identity(&e->id);
    u32 size = offsetof(struct exec_event, args) + min_u32(e->args_len, ARGS_LIMIT);
    emit(e, min_u32(size, sizeof(*e)), LOST_EXEC);
}

TRACEPOINT_PROBE(syscalls, sys_enter_execve)
{
    return exec_enter(SYSCALL_EXECVE, args->filename, args->argv);
}

TRACEPOINT_PROBE(syscalls, sys_enter_execveat)
{
    return exec_enter(SYSCALL_EXECVEAT, args->filename, args->argv);
}

/* Success: args are (task, old_pid, bprm). */
RAW_TRACEPOINT_PROBE(sched_process_exec)
{
    u32 old_tid = (u32)ctx->args[1];
    struct exec_event *e = exec_pending.lookup(&old_tid);
    if (!e)
        return 0;
    char *bprm = (char *)ctx->args[2];
    s32 argc = KREAD(s32, bprm, OFF_LINUX_BINPRM_ARGC);
    if (argc >= 0)
        e->argc = argc;
    read_image_argv(e);
    /* binfmt_script points bprm->interp at the interpreter; otherwise it is the filename. */
    e->script = KPTR(bprm, OFF_LINUX_BINPRM_INTERP) != KPTR(bprm, OFF_LINUX_BINPRM_FILENAME);
    if (!e->filename[0]) {
        /* execveat(fd, "", ..., AT_EMPTY_PATH): the kernel names it /dev/fd/N. */
        char *name = KPTR(bprm, OFF_LINUX_BINPRM_FILENAME);
        if (name)
            bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), name);
    }
    char *inode = KPTR(KPTR(bprm, OFF_LINUX_BINPRM_FILE), OFF_FILE_F_INODE);
    e->exe_ino = KREAD(u64, inode, OFF_INODE_I_INO);
    e->exe_gen = KREAD(u32, inode, OFF_INODE_I_GENERATION);
    e->exe_dev = KREAD(u32, KPTR(inode, OFF_INODE_I_SB), OFF_SUPER_BLOCK_S_DEV);
    exec_emit(e, 0);
    exec_pending.delete(&old_tid);
    return 0;
}

static __always_inline int exec_exit(long ret)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct exec_event *e = exec_pending.lookup(&tid);
    if (!e)
        return 0;
    if (ret < 0) {
        /* getname() has faulted the filename in by now, and with it any argument on the
         * same page: read again what entry could not. */
        if (!e->filename[0])
            bpf_probe_read_user_str(e->filename, sizeof(e->filename), (void *)e->filename_addr);
        read_argv(e, (const char *const *)e->argv_addr);
        exec_emit(e, (s32)ret);
    }
    exec_pending.delete(&tid);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_execve)
{
    return exec_exit(args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_exit_execveat)
{
    return exec_exit(args->ret);
}
