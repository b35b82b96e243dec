/* opus-bpf: force-included (gcc -E -include) ONLY when preprocessing a translation unit for
 * pycparser, which understands ISO C but not the GNU extensions glibc headers use.
 * These macros erase or map the extensions. They never reach the compiler that builds code:
 * the patch object is compiled from the original source text. */
#ifndef OPUS_BPF_GNU_SHIM_H
#define OPUS_BPF_GNU_SHIM_H

#define __attribute__(x)
#define __attribute(x)
#define __asm__(x)
#define __asm(x)
#define __extension__
#define __restrict restrict
#define __restrict__ restrict
#define __inline inline
#define __inline__ inline
#define __volatile__ volatile
#define __volatile volatile
#define __signed__ signed
#define __signed signed
#define __const const
#define __const__ const
#define __thread _Thread_local
#define __alignof__ _Alignof
#define __alignof _Alignof
#define __complex__ _Complex
#define __real__
#define __imag__
#define __label__ int
#define __auto_type int
#define __builtin_va_list void *
#define __builtin_offsetof(type, member) offsetof(type, member)
#define __builtin_types_compatible_p(a, b) 0
/* GNU typeof is C23 typeof: cfront parses a TU that uses it with pycparser's c23 dialect
 * (falling back to "int" when that dialect rejects the TU, e.g. for a typedef named bool). */
#define __typeof__ typeof
#define __typeof typeof
#define _Float16 float
#define _Float32 float
#define _Float64 double
#define _Float128 long double
#define _Float32x double
#define _Float64x long double
#define _Float128x long double
#define __float128 long double
#define __float80 long double
#define __bf16 float
#define _Decimal32 float
#define _Decimal64 double
#define _Decimal128 long double
#define __seg_fs
#define __seg_gs

#endif
