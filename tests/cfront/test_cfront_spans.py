"""Function spans in unpreprocessed text: the tokenizer must not be fooled by comments,
strings, preprocessor lines, initializers or aggregates."""

from __future__ import annotations

import textwrap

from opus_bpf.cfront.spans import function_spans, tokenize

SRC = textwrap.dedent(r'''
    #include <stdio.h>
    /* int fake(void) { } */
    // int fake2(void) { }
    struct s { int a; } g = { 1 };
    static const char *msg = "int x(void) { }";
    static const char brace = '{';
    #define BODY(x) \
        { return x; }
    enum e { A, B };
    union u { int i; float f; };
    int arr[] = { 1, 2, 3 };
    static int __attribute__((noinline)) helper(int x)
    {
        if (x) { return '}'; }
        return 0; // }
    }
    int (*getp(int a))(int) { return 0; }
    struct s make(void) { struct s r = { 2 }; return r; }
    int main(void) { return helper(1); }
''')


def test_spans_with_names() -> None:
    spans = function_spans(SRC, {"helper", "getp", "make", "main"})
    assert [s.name for s in spans] == ["helper", "getp", "make", "main"]
    by = {s.name: s for s in spans}
    assert by["helper"].prototype(SRC) == (
        "static int __attribute__((noinline)) helper(int x);")
    assert by["getp"].prototype(SRC) == "int (*getp(int a))(int);"
    assert by["make"].prototype(SRC) == "struct s make(void);"
    h = by["helper"]
    assert SRC[h.body_open] == "{" and SRC[h.end - 1] == "}"
    assert SRC[h.start:h.end].count("\n") == 4


def test_spans_without_names() -> None:
    assert [s.name for s in function_spans(SRC)] == ["helper", "getp", "make", "main"]


def test_tokenize_skips_comments_strings_directives() -> None:
    toks = tokenize('#define X {\n/* { */ a = "}{" + L\'{\'; // {\n')
    assert [t.text for t in toks] == ["a", "=", '"}{"', "+", "'{'", ";"]
