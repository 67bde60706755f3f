/* nixjail's hostile-suite probe: raw system calls without libc, so it runs
   in a jail that has no C library. One mode per argument:
     syscalls  each call the jail's policy refuses, one line "name: ANSWER"
     i386      getpid through int 0x80 (the policy kills the thread: SIGSYS)
     threads   threads until the kernel refuses one, then "thread refused: E<n>"
     sockets PORT  a socket of each family the jail refuses, and a TCP connect to
               127.0.0.1:PORT, one line "attack: socket|connect: ANSWER" each
   Built by build.sh; the result is copied into the attack directories that use it. */

typedef unsigned long u64;

static long sys(long n, long a, long b, long c, long d, long e, long f) {
    register long r10 __asm__("r10") = d, r8 __asm__("r8") = e, r9 __asm__("r9") = f;
    long ret;
    __asm__ volatile("syscall" : "=a"(ret)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}

static long length(const char *s) { volatile long n = 0; while (s[n]) n++; return n; }
static void put(const char *s) { sys(1, 1, (long)s, length(s), 0, 0, 0); }

static void put_number(long n) {
    char text[24];
    int i = 23;
    text[i] = 0;
    if (n == 0) text[--i] = '0';
    while (n > 0) { text[--i] = (char)('0' + n % 10); n /= 10; }
    put(text + i);
}

static void answer(const char *name, long ret) {
    put(name);
    put(": ");
    if (ret >= 0) put("ANSWERED");
    else if (ret == -1) put("EPERM");
    else if (ret == -38) put("ENOSYS");
    else { put("E"); put_number(-ret); }
    put("\n");
}

#define X32 0x40000000L
#define CLONE_NEWNS 0x00020000L
#define CLONE_NEWUSER 0x10000000L
#define CLONE_NEWNET 0x40000000L

static void syscalls(void) {
    answer("ptrace", sys(101, 0, 0, 0, 0, 0, 0));
    answer("process_vm_readv", sys(310, 1, 0, 0, 0, 0, 0));
    answer("kcmp", sys(312, 1, 1, 0, 0, 0, 0));
    answer("mount", sys(165, 0, 0, 0, 0, 0, 0));
    answer("pivot_root", sys(155, 0, 0, 0, 0, 0, 0));
    answer("chroot", sys(161, 0, 0, 0, 0, 0, 0));
    answer("unshare", sys(272, CLONE_NEWUSER, 0, 0, 0, 0, 0));
    answer("setns", sys(308, 0, 0, 0, 0, 0, 0));
    long child = sys(56, CLONE_NEWNS | CLONE_NEWNET | 17, 0, 0, 0, 0, 0);
    if (child == 0) sys(231, 0, 0, 0, 0, 0, 0); /* a fork it was: the copy leaves at once */
    answer("clone newns", child);
    answer("clone3", sys(435, 0, 0, 0, 0, 0, 0));
    answer("keyctl", sys(250, 0, 0, 0, 0, 0, 0));
    answer("add_key", sys(248, 0, 0, 0, 0, 0, 0));
    answer("bpf", sys(321, 0, 0, 0, 0, 0, 0));
    answer("perf_event_open", sys(298, 0, 0, 0, 0, 0, 0));
    answer("userfaultfd", sys(323, 0, 0, 0, 0, 0, 0));
    answer("io_uring_setup", sys(425, 1, 0, 0, 0, 0, 0));
    answer("kexec_load", sys(246, 0, 0, 0, 0, 0, 0));
    answer("reboot", sys(169, 0, 0, 0, 0, 0, 0));
    answer("swapon", sys(167, 0, 0, 0, 0, 0, 0));
    answer("acct", sys(163, 0, 0, 0, 0, 0, 0));
    answer("init_module", sys(175, 0, 0, 0, 0, 0, 0));
    answer("open_by_handle_at", sys(304, 0, 0, 0, 0, 0, 0));
    answer("fanotify_init", sys(300, 0, 0, 0, 0, 0, 0));
    answer("iopl", sys(172, 3, 0, 0, 0, 0, 0));
    answer("ioperm", sys(173, 0, 1, 1, 0, 0, 0));
    answer("syslog", sys(103, 3, 0, 0, 0, 0, 0));
    answer("x32 getpid", sys(X32 | 39, 0, 0, 0, 0, 0, 0));
    answer("x32 socket", sys(X32 | 41, 1, 1, 0, 0, 0, 0));
    answer("x32 ptrace", sys(X32 | 521, 0, 0, 0, 0, 0, 0));
}

static void i386(void) {
    long ret;
    __asm__ volatile("int $0x80" : "=a"(ret) : "a"(20L) : "memory");
    answer("i386 getpid", ret);
}

static void threads(void) {
    /* CLONE_VM|FS|FILES|SIGHAND|THREAD|SYSVSEM; each thread parks in pause(). */
    const long flags = 0x100L | 0x200L | 0x400L | 0x800L | 0x10000L | 0x40000L;
    for (long made = 0; made < 100000; made++) {
        long ret;
        register long r10 __asm__("r10") = 0, r8 __asm__("r8") = 0;
        /* The thread shares this stack: it never leaves the asm block. */
        __asm__ volatile("syscall\n\t"
                         "test %%rax, %%rax\n\t"
                         "jnz 1f\n"
                         "2:\n\t"
                         "mov $34, %%eax\n\t"
                         "syscall\n\t"
                         "jmp 2b\n"
                         "1:"
                         : "=a"(ret)
                         : "a"(56L), "D"(flags), "S"(0L), "d"(0L), "r"(r10), "r"(r8)
                         : "rcx", "r11", "memory");
        if (ret < 0) {
            put("thread refused after ");
            put_number(made);
            put(": E");
            put_number(-ret);
            put("\n");
            return;
        }
    }
    put("threads: 100000 made\n");
}

static void errno_name(long ret) {
    if (ret == -1) put("EPERM");
    else if (ret == -97) put("EAFNOSUPPORT");
    else if (ret == -111) put("ECONNREFUSED");
    else if (ret == -93) put("EPROTONOSUPPORT");
    else if (ret == -22) put("EINVAL");
    else if (ret == -38) put("ENOSYS");
    else { put("E"); put_number(-ret); }
}

/* socket(family, type, proto); with a port, a connect to 127.0.0.1:port. A socket
   that is made is closed at once: nothing is sent through it. */
static void attempt(const char *attack, long family, long type, long proto, long port) {
    long fd = sys(41, family, type, proto, 0, 0, 0);
    put(attack);
    if (fd < 0) { put(": socket: "); errno_name(fd); put("\n"); return; }
    if (port < 0) { put(": socket: created\n"); sys(3, fd, 0, 0, 0, 0, 0); return; }
    /* struct sockaddr_in: AF_INET, the port in network order, 127.0.0.1 */
    unsigned char address[16] = {2, 0, (unsigned char)(port >> 8), (unsigned char)port,
                                 127, 0, 0, 1};
    long ret = sys(42, fd, (long)address, 16, 0, 0, 0);
    if (ret < 0) { put(": connect: "); errno_name(ret); }
    else put(": connect: connected");
    put("\n");
    sys(3, fd, 0, 0, 0, 0, 0);
}

static long number(const char *s) {
    long n = 0;
    while (*s >= '0' && *s <= '9') n = n * 10 + (*s++ - '0');
    return n;
}

static void sockets(long port) {
    attempt("vsock cid 1", 40, 1, 0, -1); /* AF_VSOCK: never connected, even if made */
    attempt("vsock cid 2", 40, 1, 0, -1);
    attempt("packet", 17, 3, 0x0300, -1); /* AF_PACKET, SOCK_RAW, htons(ETH_P_ALL) */
    attempt("netlink", 16, 3, 0, -1); /* AF_NETLINK, SOCK_RAW, NETLINK_ROUTE */
    attempt("alg", 38, 5, 0, -1); /* AF_ALG, SOCK_SEQPACKET */
    attempt("bluetooth", 31, 1, 0, -1);
    attempt("raw inet", 2, 3, 1, -1); /* AF_INET, SOCK_RAW, IPPROTO_ICMP */
    attempt("raw inet6", 10, 3, 58, -1); /* AF_INET6, SOCK_RAW, IPPROTO_ICMPV6 */
    attempt("api port", 2, 1, 0, port);
}

static int same(const char *a, const char *b) {
    while (*a && *a == *b) { a++; b++; }
    return *a == *b;
}

void start(long *stack) {
    long argc = stack[0];
    char **argv = (char **)(stack + 1);
    if (argc > 1 && same(argv[1], "syscalls")) syscalls();
    else if (argc > 1 && same(argv[1], "i386")) i386();
    else if (argc > 1 && same(argv[1], "threads")) threads();
    else if (argc > 2 && same(argv[1], "sockets")) sockets(number(argv[2]));
    else put("usage: abi-probe syscalls|i386|threads|sockets PORT\n");
    sys(231, 0, 0, 0, 0, 0, 0); /* exit_group */
}

__asm__(".globl _start\n_start:\n\tmov %rsp, %rdi\n\tand $-16, %rsp\n\tcall start\n");
