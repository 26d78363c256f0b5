// Host code linking minitrain::cuda: the target must bring MINITRAIN_HAS_CUDA, the CUDA runtime and
// cuBLAS headers and libraries (and NCCL's when minitrain was built with it). Needs no GPU: it only
// asks each library for its version.
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstdio>

#if !defined(MINITRAIN_HAS_CUDA)
#error "minitrain::cuda must define MINITRAIN_HAS_CUDA"
#endif
#if defined(MINITRAIN_HAS_NCCL)
#include <nccl.h>
#endif

int main() {
    int runtime = 0, cublas_major = 0;
    if (cudaRuntimeGetVersion(&runtime) != cudaSuccess || runtime <= 0) {
        std::printf("consumer (cuda): FAILED cudaRuntimeGetVersion\n");
        return 1;
    }
    if (cublasGetProperty(MAJOR_VERSION, &cublas_major) != CUBLAS_STATUS_SUCCESS || cublas_major <= 0) {
        std::printf("consumer (cuda): FAILED cublasGetProperty\n");
        return 1;
    }
    int nccl = 0;
#if defined(MINITRAIN_HAS_NCCL)
    if (ncclGetVersion(&nccl) != ncclSuccess || nccl <= 0) {
        std::printf("consumer (cuda): FAILED ncclGetVersion\n");
        return 1;
    }
#endif
    std::printf("consumer (cuda): ok (runtime %d, cuBLAS %d, NCCL %d)\n", runtime, cublas_major, nccl);
    return 0;
}
