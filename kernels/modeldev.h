/* modeldev: what the training model (model.cu, gk_gpu) and the decoder
 * (decode.cu, gk_gpu_dec) of lib/gpu.h share when they put a layout on the
 * device. Both are defined in model.cu. */
#ifndef GK_MODELDEV_H
#define GK_MODELDEV_H

#include <cuda_runtime_api.h>
#include <stddef.h>

extern "C" {
#include "model.h"
}

/* Die naming PROG when there is no usable CUDA device or when the layout's
 * product widths are not what the bf16 GEMMs need (kernels/gemm.h); else
 * write the device's name ("NVIDIA H100 80GB HBM3, sm_90") into NAME. */
void gk_cu_model_open(const gk_layout *l, const char *prog, char *name, size_t len);

/* The rotary tables of gk_rope_table_f32 for T positions into the device
 * arrays cos and sin [T, rope_dims/2]; returns once they are there. */
void gk_cu_rope_upload(float *cos, float *sin, int T, const gk_config *c, cudaStream_t stream);

#endif
