"""cfront against real gcc and real glibc headers: preprocessing, parsing, indexing, diffing."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from opus_bpf.cfront import (
    CFrontError,
    changed_functions,
    filter_cflags,
    function_names,
    parse,
    preprocess,
)

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")

HEADERS = ["stdio.h", "stdlib.h", "string.h", "pthread.h", "sys/socket.h", "netinet/in.h",
           "arpa/inet.h", "unistd.h", "errno.h", "signal.h", "time.h", "stdint.h", "stdarg.h",
           "fcntl.h", "poll.h", "sys/epoll.h", "stddef.h", "stdbool.h", "math.h", "ctype.h",
           "assert.h", "limits.h", "sys/types.h", "sys/stat.h", "sys/time.h", "netdb.h",
           "sys/un.h", "stdatomic.h", "setjmp.h", "sys/mman.h", "dirent.h"]

PROGRAM = "\n".join(f"#include <{h}>" for h in HEADERS) + textwrap.dedent("""
    struct conn { int fd; int count; };
    int counter = 1;
    static int scount;
    static const char *names[] = { "a", "b" };
    extern int elsewhere;
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

    static int helper(int x) { return x + scount; }
    static inline int sq(int x) { return x * x; }

    int serve(int fd, ...)
    {
        static int calls;
        static const int table[] = { 1, 2, 3 };
        va_list ap;
        va_start(ap, fd);
        int v = va_arg(ap, int);
        va_end(ap);
        struct conn c = { .fd = fd, .count = 0 };
        struct sockaddr_in sa;
        memset(&sa, 0, sizeof sa);
        sa.sin_port = htons(8080);
        pthread_mutex_lock(&lock);
        calls++;
        c.count += helper(v) + counter + table[0] + (int)offsetof(struct conn, count);
        pthread_mutex_unlock(&lock);
        if (errno == EINTR)
            return -1;
        assert(fd >= 0);
        return c.count + sq(2) + (int)strlen(names[0]);
    }

    int main(void) { return serve(0, 1); }
""")

FLAG_SETS = [["-O2", "-D_FORTIFY_SOURCE=2"], ["-std=c99", "-O0", "-pthread"],
             ["-std=gnu11", "-D_GNU_SOURCE", "-O3", "-D_FILE_OFFSET_BITS=64"]]


@pytest.fixture(scope="module")
def prog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("prog") / "prog.c"
    p.write_text(PROGRAM)
    return p


@pytest.mark.parametrize("flags", FLAG_SETS, ids=lambda f: " ".join(f) or "default")
def test_glibc_headers_parse(prog: Path, flags: list[str]) -> None:
    tu = parse("prog.c", flags, prog.parent)
    assert set(tu.functions) == {"helper", "sq", "serve", "main"}
    assert "printf" in tu.file_scope and tu.file_scope["printf"].kind == "function"


def test_index(prog: Path) -> None:
    tu = parse("prog.c", ["-O2", "-D_FORTIFY_SOURCE=2"], prog.parent)  # cached: same TU
    f = tu.functions
    assert f["helper"].is_static and not f["helper"].is_inline
    assert f["sq"].is_static and f["sq"].is_inline
    assert not f["serve"].is_static
    assert f["serve"].line == PROGRAM.splitlines().index("int serve(int fd, ...)") + 1
    assert f["serve"].file == "prog.c"
    assert {ls.name for ls in tu.local_statics("serve")} == {"calls", "table"}
    table = next(ls for ls in tu.local_statics("serve") if ls.name == "table")
    assert table.is_const and table.has_initializer
    assert tu.local_statics("nope") == []
    g = tu.globals
    assert g["counter"].storage == "" and g["counter"].has_initializer
    assert g["scount"].storage == "static" and not g["scount"].has_initializer
    assert g["elsewhere"].storage == "extern"
    assert "lock" in g and "names" in g
    # header-declared names are in file_scope but not in globals
    assert "stderr" not in g and "stderr" in tu.file_scope
    assert tu.file_scope["scount"].static and tu.file_scope["scount"].defined_in_file
    assert not tu.file_scope["elsewhere"].defined_in_file


def test_function_names(prog: Path) -> None:
    tu = parse("prog.c", ["-O2", "-D_FORTIFY_SOURCE=2"], prog.parent)
    n = tu.functions["serve"].names
    assert {"counter", "helper", "memset", "lock", "names", "sq", "strlen"} <= n.free
    assert {"fd", "calls", "table", "ap", "v", "c", "sa"} <= n.bound
    assert "calls" not in n.free and "v" not in n.free
    assert {"fd", "count", "sin_port"} <= n.members  # .fd=, c.count, offsetof(.., count)
    assert "count" not in n.free


def test_scoping(tmp_path: Path) -> None:
    (tmp_path / "s.c").write_text(textwrap.dedent("""
        int x, y;
        enum { RED, GREEN };
        int f(int a) {
            { int x = a; a += x; }
            for (int y = 0; y < 3; y++) a += y;
            return a + x + RED;
        }
        int g(void) { int y = 1; return y; }
    """))
    tu = parse("s.c", [], tmp_path)
    f = function_names(tu.functions["f"].node)
    assert "x" in f.free and "x" in f.bound  # free use outside the block that binds it
    assert "y" not in f.free
    assert "RED" in tu.enumerators
    assert "y" not in tu.functions["g"].names.free


def test_only_own_file_functions(tmp_path: Path) -> None:
    (tmp_path / "inc.h").write_text("static inline int from_header(void) { return 1; }\n")
    (tmp_path / "m.c").write_text('#include "inc.h"\nint mine(void) { return from_header(); }\n')
    tu = parse("m.c", [], tmp_path)
    assert set(tu.functions) == {"mine"}
    assert tu.file_scope["from_header"].kind == "function"


def test_parse_with_absolute_path_and_include_dirs(tmp_path: Path) -> None:
    (tmp_path / "include").mkdir()
    (tmp_path / "include" / "cfg.h").write_text("#define N 4\n")
    (tmp_path / "a.c").write_text('#include "cfg.h"\nint arr[N];\nint f(void) { return N; }\n')
    tu = parse(tmp_path / "a.c", ["-Iinclude", "-c", "-o", "a.o", "-MD", "-MF", "a.d"],
               tmp_path)
    assert set(tu.functions) == {"f"} and "arr" in tu.globals


def test_filter_cflags() -> None:
    flags = ["-c", "-o", "x.o", "-MD", "-MF", "x.d", "-Wall", "-Werror", "-g", "-I", "inc",
             "-Iinc2", "-DX=1", "-D", "Y", "-UZ", "-std=gnu11", "-include", "cfg.h", "-O2",
             "-isystem", "/opt/inc", "-fPIC", "-fsanitize=address", "-pthread", "src.c",
             "-flto", "-x", "c"]
    assert filter_cflags(flags) == ["-I", "inc", "-Iinc2", "-DX=1", "-D", "Y", "-UZ",
                                    "-std=gnu11", "-include", "cfg.h", "-O2", "-isystem",
                                    "/opt/inc", "-fPIC", "-pthread"]


def test_preprocess_keeps_line_markers(prog: Path) -> None:
    text = preprocess("prog.c", [], prog.parent)
    assert '# 1 "prog.c"' in text
    assert "__attribute__" not in text.split('# 1 "prog.c"')[-1]


def test_preprocess_error_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad.c").write_text('#include "missing.h"\n')
    with pytest.raises(CFrontError) as ei:
        preprocess("bad.c", [], tmp_path)
    assert "missing.h" in ei.value.message and "\n" not in ei.value.message


def test_parse_error_is_clear(tmp_path: Path) -> None:
    (tmp_path / "bad.c").write_text("int f(void) { return 1 +; }\n")
    with pytest.raises(CFrontError) as ei:
        parse("bad.c", [], tmp_path)
    assert "bad.c:1" in ei.value.message


def _tus(tmp_path: Path, old: str, new: str):
    (tmp_path / "old").mkdir(exist_ok=True)
    (tmp_path / "new").mkdir(exist_ok=True)
    (tmp_path / "old" / "x.c").write_text(old)
    (tmp_path / "new" / "x.c").write_text(new)
    return parse("x.c", [], tmp_path / "old"), parse("x.c", [], tmp_path / "new")


BASE = textwrap.dedent("""
    #include <string.h>
    #define LIMIT 10
    static int a(int x) { return x + 1; }
    int b(const char *s) { return (int)strlen(s) > LIMIT; }
    int c(void) { return a(1); }
""")


def test_changed_functions(tmp_path: Path) -> None:
    new = (BASE.replace("return x + 1;", "return x + 2;")
           .replace("int c(void)", "int d(void) { return 4; }\nint c(void)")
           + "\n")
    old_tu, new_tu = _tus(tmp_path, BASE, new)
    cs = changed_functions(old_tu, new_tu)
    assert cs.modified == ["a"] and cs.added == ["d"] and cs.removed == []
    assert cs.signature_changed == []
    assert cs


def test_layout_and_comments_do_not_count(tmp_path: Path) -> None:
    new = BASE.replace("{ return x + 1; }", "{\n    /* bump */\n    return x   +   1;\n}\n")
    old_tu, new_tu = _tus(tmp_path, "\n\n" + BASE, new)
    assert not changed_functions(old_tu, new_tu)


def test_macro_change_counts_and_removal(tmp_path: Path) -> None:
    new = BASE.replace("#define LIMIT 10", "#define LIMIT 20").replace(
        "int c(void) { return a(1); }", "")
    cs = changed_functions(*_tus(tmp_path, BASE, new))
    assert cs.modified == ["b"] and cs.removed == ["c"]


def test_signature_change(tmp_path: Path) -> None:
    new = BASE.replace("static int a(int x) { return x + 1; }",
                       "static long a(int x) { return x + 1; }")
    cs = changed_functions(*_tus(tmp_path, BASE, new))
    assert cs.modified == ["a"] and cs.signature_changed == ["a"]


def test_gnu_extensions_in_user_code(tmp_path: Path) -> None:
    (tmp_path / "g.c").write_text(textwrap.dedent("""
        #include <stdio.h>
        #define barrier() __asm__ __volatile__("" ::: "memory")
        #define max(a, b) ({ __typeof__(a) _a = (a); __typeof__(b) _b = (b); _a > _b ? _a : _b; })
        static int counter __attribute__((aligned(8)));
        extern int renamed(int) __asm__("real_name");
        __extension__ typedef unsigned long long u64;
        static inline __attribute__((always_inline)) int f(int x) { return x; }
        int g(int a, int b) {
            switch (a) { case 'a' ... 'z': a++; break; case 1 ... 3: break; default: break; }
            barrier();
            asm volatile("mov %0, %0 /* ( */" : "+r"(a));
            __typeof__(a) c = max(a, b) + f(counter);
            return c + __builtin_expect(a, 0) + (int)sizeof(u64) + __alignof__(int);
        }
    """))
    tu = parse("g.c", ["-O2"], tmp_path)
    assert set(tu.functions) == {"f", "g"}
    assert "counter" in tu.functions["g"].names.free
    assert tu.functions["g"].line == 9
    assert "counter" in tu.functions["g"].names.free


def test_case_range_bound_change_is_a_change(tmp_path: Path) -> None:
    src = "int f(int c) { switch (c) { case 'a' ... 'y': return 1; } return 0; }\n"
    cs = changed_functions(*_tus(tmp_path, src, src.replace("'y'", "'z'")))
    assert cs.modified == ["f"]


def test_asm_change_is_a_change(tmp_path: Path) -> None:
    src = 'int f(int a) { __asm__ volatile("nop" : "+r"(a)); return a; }\n'
    cs = changed_functions(*_tus(tmp_path, src, src.replace("nop", "pause")))
    assert cs.modified == ["f"]
    cs = changed_functions(*_tus(tmp_path, src, "\n" + src))
    assert not cs


def test_labels_as_values(tmp_path: Path) -> None:
    src = textwrap.dedent("""
        int run(int op) {
            static void *const table[] = { &&L_ADD, &&L_SUB };
            int acc = 0;
            goto *table[op];
        L_ADD: acc += 1; return acc && op;
        L_SUB: acc -= 1; return acc;
        }
    """)
    cs = changed_functions(*_tus(tmp_path, src, src.replace("acc -= 1", "acc -= 2")))
    assert cs.modified == ["run"]


def test_typeof(tmp_path: Path) -> None:
    src = textwrap.dedent("""
        int a; long b;
        int f(void) { __typeof__(a) x = 1; typeof(a) y = 2; return x + y; }
    """)
    old, new = _tus(tmp_path, src, src.replace("__typeof__(a) x", "__typeof__(b) x"))
    assert changed_functions(old, new).modified == ["f"]
    assert "a" in old.functions["f"].names.free


def test_typeof_with_pre_c23_identifiers(tmp_path: Path) -> None:
    # "bool" as a typedef name is not valid C23: the fallback parse reads typeof(...) as int
    src = "typedef int bool;\nint a;\nbool f(void) { __typeof__(a) x = 1; return x; }\n"
    old, new = _tus(tmp_path, src, src.replace("return x;", "return x + 1;"))
    assert changed_functions(old, new).modified == ["f"]
