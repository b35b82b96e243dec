"""What library calls do to program state. The analysis cannot see libc's source, so each
function a patch may call is described here; anything not listed and not defined in the TU is
an unknown call (reported when the patch adds it)."""

from __future__ import annotations

# name -> indices of arguments whose pointee the call writes. "rest:N" means every argument
# from index N on (scanf family).
WRITES_THROUGH: dict[str, tuple[int | str, ...]] = {
    "memcpy": (0,), "memmove": (0,), "memset": (0,), "memccpy": (0,), "mempcpy": (0,),
    "bzero": (0,), "explicit_bzero": (0,), "bcopy": (1,),
    "strcpy": (0,), "strncpy": (0,), "stpcpy": (0,), "stpncpy": (0,), "strcat": (0,),
    "strncat": (0,), "strlcpy": (0,), "strlcat": (0,),
    "sprintf": (0,), "snprintf": (0,), "vsprintf": (0,), "vsnprintf": (0,),
    "asprintf": (0,), "vasprintf": (0,),
    "read": (1,), "pread": (1,), "recv": (1,), "recvfrom": (1, 4, 5), "recvmsg": (1,),
    "readv": (1,), "fgets": (0,), "gets": (0,), "fread": (0,), "getline": (0, 1),
    "getdelim": (0, 1), "fgetws": (0,),
    "sscanf": ("rest:2",), "fscanf": ("rest:2",), "scanf": ("rest:1",),
    "vsscanf": (), "strtok": (0,), "strtok_r": (0, 2), "strsep": (0,),
    "strtol": (1,), "strtoul": (1,), "strtoll": (1,), "strtoull": (1,), "strtod": (1,),
    "strtof": (1,), "strtold": (1,), "strtoimax": (1,), "strtoumax": (1,),
    "free": (0,), "realloc": (0,), "reallocarray": (0,), "qsort": (0,),
    "pthread_mutex_lock": (0,), "pthread_mutex_unlock": (0,), "pthread_mutex_trylock": (0,),
    "pthread_mutex_init": (0,), "pthread_mutex_destroy": (0,), "pthread_cond_wait": (0, 1),
    "pthread_cond_timedwait": (0, 1), "pthread_cond_signal": (0,),
    "pthread_cond_broadcast": (0,), "pthread_rwlock_rdlock": (0,), "pthread_rwlock_wrlock": (0,),
    "pthread_rwlock_unlock": (0,), "pthread_spin_lock": (0,), "pthread_spin_unlock": (0,),
    "pthread_once": (0,), "pthread_create": (0,), "pthread_join": (1,),
    "sem_wait": (0,), "sem_post": (0,), "sem_trywait": (0,),
    "time": (0,), "gettimeofday": (0,), "clock_gettime": (1,), "localtime_r": (1,),
    "gmtime_r": (1,), "stat": (1,), "fstat": (1,), "lstat": (1,), "pipe": (0,),
    "accept": (1, 2), "getsockopt": (3, 4), "getsockname": (1, 2), "getpeername": (1, 2),
    "inet_pton": (2,), "inet_ntop": (2,), "getaddrinfo": (3,), "freeaddrinfo": (0,),
    "poll": (0,), "select": (1, 2, 3), "epoll_wait": (1,), "sigemptyset": (0,),
    "sigaddset": (0,), "sigfillset": (0,), "sigprocmask": (2,), "pthread_sigmask": (2,),
    "va_start": (0,), "va_end": (0,), "va_copy": (0,), "__builtin_va_start": (0,),
    "__builtin_va_end": (0,), "__builtin_va_copy": (0,),
    "__builtin_memcpy": (0,), "__builtin_memset": (0,), "__builtin_memmove": (0,),
    "__builtin_strcpy": (0,), "__builtin___memcpy_chk": (0,), "__builtin___memset_chk": (0,),
    "__builtin___strcpy_chk": (0,), "__builtin___snprintf_chk": (0,),
    "__builtin___sprintf_chk": (0,), "__memcpy_chk": (0,), "__strcpy_chk": (0,),
    "__read_chk": (1,), "__fgets_chk": (0,), "__snprintf_chk": (0,), "__sprintf_chk": (0,),
    "fclose": (0,), "fflush": (0,), "setvbuf": (0,), "ungetc": (1,),
}

# calls that change hidden library state shared by the whole program
GLOBAL_STATE: dict[str, str] = {
    "strtok": "strtok's static position", "srand": "the rand() seed", "rand": "the rand() state",
    "srandom": "the random() seed", "random": "the random() state",
    "setenv": "the environment", "unsetenv": "the environment", "putenv": "the environment",
    "signal": "signal dispositions", "sigaction": "signal dispositions",
    "atexit": "exit handlers", "setlocale": "the locale", "umask": "the process umask",
    "chdir": "the working directory", "setuid": "process credentials",
    "setgid": "process credentials", "seteuid": "process credentials",
    "setegid": "process credentials", "close": "the descriptor table",
    "dup2": "the descriptor table",
    "localtime": "localtime's static buffer", "gmtime": "gmtime's static buffer",
    "ctime": "ctime's static buffer", "asctime": "asctime's static buffer",
    "inet_ntoa": "inet_ntoa's static buffer",
}

# calls with no effect on program memory the old code relies on: pure functions, output to
# files/sockets/terminals (an external effect, not state a patched function shares with the
# rest of the program) and allocation (the fresh object is counted when written).
NO_STATE: frozenset[str] = frozenset(
    [
        "strlen", "strnlen", "strcmp", "strncmp", "strcasecmp", "strncasecmp", "strchr",
        "strrchr", "strstr", "strcasestr", "strspn", "strcspn", "strpbrk", "memcmp", "memchr",
        "memrchr", "strcoll", "strdup", "strndup", "isalpha", "isdigit", "isalnum", "isspace",
        "isupper", "islower", "isxdigit", "isprint", "iscntrl", "ispunct", "isgraph",
        "isascii", "toupper", "tolower", "abs", "labs", "llabs", "atoi", "atol", "atoll",
        "atof", "printf", "fprintf", "vprintf", "vfprintf", "dprintf", "puts", "fputs",
        "fputc", "putc", "putchar", "fwrite", "write", "send", "sendto", "sendmsg", "writev",
        "perror", "syslog", "vsyslog", "openlog", "malloc", "calloc", "aligned_alloc",
        "posix_memalign", "valloc", "memalign", "alloca", "__builtin_alloca", "getpid",
        "getppid", "gettid", "pthread_self", "sizeof", "assert", "__assert_fail", "exit",
        "_exit", "_Exit", "abort", "quick_exit", "pthread_exit", "longjmp", "siglongjmp",
        "err", "errx", "verr", "verrx", "warn", "warnx", "vwarn", "vwarnx", "strerror",
        "htons", "htonl", "ntohs", "ntohl", "__builtin_expect", "__builtin_constant_p",
        "__builtin_unreachable", "__builtin_trap", "__builtin_bswap16", "__builtin_bswap32",
        "__builtin_bswap64", "__builtin_clz", "__builtin_ctz", "__builtin_popcount",
        "__builtin_object_size", "getenv", "open", "openat", "fopen", "fdopen", "socket",
        "connect", "bind", "listen", "shutdown", "lseek", "fseek", "ftell", "rewind", "feof",
        "ferror", "fileno", "isatty", "sleep", "usleep", "nanosleep", "sched_yield",
        "__errno_location", "__builtin_strlen", "__builtin_memcmp", "__builtin_strcmp",
        "__stack_chk_fail", "__fprintf_chk", "__printf_chk", "__vfprintf_chk",
        "__builtin_isnan", "__builtin_isinf", "__builtin_huge_val", "bsearch", "sqrt", "floor",
        "ceil", "pow", "fabs", "log", "exp", "fmin", "fmax", "lround", "round", "difftime",
        "wcslen", "wcscmp", "isblank", "iswspace",
        "__ctype_b_loc", "__ctype_tolower_loc", "__ctype_toupper_loc"
    ]
)

# functions that never return to their caller
NORETURN: frozenset[str] = frozenset(
    [
        "exit", "_exit", "_Exit", "abort", "quick_exit", "pthread_exit", "longjmp",
        "siglongjmp", "err", "errx", "verr", "verrx", "__assert_fail", "__stack_chk_fail",
        "__builtin_unreachable", "__builtin_trap", "__chk_fail"
    ]
)

# functions whose result is a pointer to one of their arguments (alias propagation)
RETURNS_ARG: dict[str, int] = {
    "memcpy": 0, "memmove": 0, "memset": 0, "strcpy": 0, "strncpy": 0, "strcat": 0,
    "strncat": 0, "strchr": 0, "strrchr": 0, "strstr": 0, "strpbrk": 0, "memchr": 0,
    "memrchr": 0, "strcasestr": 0, "stpcpy": 0, "realloc": 0, "fgets": 0, "strtok_r": 0,
    "__builtin_memcpy": 0, "__builtin_memset": 0,
}

ALLOCATORS: frozenset[str] = frozenset(
    [
        "malloc", "calloc", "realloc", "reallocarray", "strdup", "strndup", "aligned_alloc",
        "valloc", "memalign"
    ]
)

# functions that take a thread start routine, and the index of that argument
THREAD_STARTERS: dict[str, int] = {"pthread_create": 2, "thrd_create": 1}
