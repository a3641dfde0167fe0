/* CBLAS for MinkowskiEngine from the scipy-openblas32 wheel, for machines without a system BLAS.
 *
 * MinkowskiEngine's CPU maths (src/math_functions_cpu.cpp, compiled into the CUDA build too) calls
 * four CBLAS routines through <cblas.h>. Where no system BLAS with headers is installed (no
 * libopenblas-dev, and no package registry to get it), the scipy-openblas32 wheel carries
 * OpenBLAS with its headers; its symbols are prefixed "scipy_" so that they never clash with
 * another OpenBLAS in the process. scripts/build_minkowski_cuda.sh puts this directory first on the
 * include path and the wheel's include directory after it, so this header pulls in the wheel's
 * cblas.h and maps the four names MinkowskiEngine uses to the prefixed ones.
 */
#ifndef HVD_CBLAS_SHIM_H
#define HVD_CBLAS_SHIM_H
#include_next <cblas.h>
#define cblas_sgemm scipy_cblas_sgemm
#define cblas_dgemm scipy_cblas_dgemm
#define cblas_saxpy scipy_cblas_saxpy
#define cblas_daxpy scipy_cblas_daxpy
#endif
