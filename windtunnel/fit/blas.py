"""The fitters' linear algebra runs on one BLAS thread. Their matrices are tiny (5 parameters, a few hundred points)
and L-BFGS-B calls BLAS thousands of times per fit: extra OpenBLAS threads buy nothing on idle cores and, beside
any other busy process, spin for cores they cannot get (benchmarks/threads.py: Approach 3 with 200 bootstraps).
WINDTUNNEL_BLAS_THREADS=N sets another count; 0 leaves the library's own."""
import functools
import os


def blas_threads() -> int:
    """The BLAS threads a fit uses: $WINDTUNNEL_BLAS_THREADS, else 1 (0: the library's default)."""
    value = os.environ.get("WINDTUNNEL_BLAS_THREADS", "").strip()
    try:
        return max(0, int(value)) if value else 1
    except ValueError:
        raise ValueError(f"WINDTUNNEL_BLAS_THREADS={value!r} must be a whole number of threads (0: the BLAS "
                         f"library's own default)") from None


def one_blas_thread(fit):
    """Run `fit` with BLAS limited to blas_threads() threads (threadpoolctl; restored after)."""
    @functools.wraps(fit)
    def limited(*args, **kwargs):
        threads = blas_threads()
        if not threads:
            return fit(*args, **kwargs)
        from threadpoolctl import threadpool_limits
        with threadpool_limits(limits=threads, user_api="blas"):
            return fit(*args, **kwargs)
    return limited
