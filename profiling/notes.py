"""The note printed under each table: what is counted, and how."""
from __future__ import annotations

COMPLEXITY = (
    "*Counted:* parameters of every network involved, and forward operations per image of a "
    "zero input at batch 1, model in eval mode, by two counters, each in its own column. "
    "**pytorch-estimate-flops** (`pthflops` 0.4.2, its default FX mode) is the counter the POSD "
    "paper cites for Table 14; its rules are applied by `profiling.paper_counter` (checked "
    "against the package in the tests): one per multiply-accumulate of convolutions and linear "
    "layers, plus biases, residual additions (1 per element per operand), batch norm (2 per "
    "element), ReLU *modules* (2 per element; functional `F.relu` counts 0) and pooling. It "
    "gives the paper's four figures to the digit (0.07, 0.33, 0.10, 0.43 G). **fvcore**'s "
    "`FlopCountAnalysis` counts one multiply-accumulate (MAC) per \"flop\" for convolutions and "
    "linear layers, batch norm (eval: 2 per element) and adaptive pooling; it has no formula for "
    "the operators in its *not counted* column (residual `add`, `max_pool2d`, zero-padding `pad` "
    "of option-A shortcuts) and ignores ReLU by design: these are listed, not silently taken as "
    "zero. Its eval-mode sum for ResNet-110 + ResNet-32 is 0.3245 G, which rounds to 0.32 G "
    "where the paper's counter gives 0.3258 G -> 0.33 G. FLOPs = 2 × MACs for readers who mean "
    "floating-point operations. KD = teacher + student forward per distillation step; DML = two "
    "peers. *Training MACs / image / step* = 3 × the forward of what trains (backward taken as "
    "2 × forward, the usual convention; fvcore counts forward only) + 1 × the frozen teacher's "
    "forward; KD phase 1 (training the teacher) costs 3 × the teacher's forward on top. "
    "Parameters are for the classifier head of the row (10 classes for CIFAR-10); WRN-40-2 has "
    "2.24 M with a 10-class head and 2.26 M, the paper's figure, with a 100-class (CIFAR-100) "
    "head."
)

STORAGE = (
    "*Definitions:* **fp32 weights** = parameters × 4 bytes (BN running statistics are buffers, "
    "not counted); **torch.save(state_dict)** = the file written for the model's state dict "
    "(parameters + buffers) in PyTorch's current zip format, whose 64-byte-aligned records and "
    "per-tensor zip headers add about 2 KiB for the lightweight nets and up to ~90 KiB for "
    "ResNet-110 (one record per tensor); **same, legacy format** = `_use_new_zipfile_serialization="
    "False`, the pre-1.6 format. The paper's Table 16 is the legacy file: cifar_cnn 248.01 KiB "
    "(paper 248 KiB) and fashion_cnn 303.94 KiB (paper 303.9 KiB), to the digit, with the "
    "layers named conv1, conv2, fc1, fc2(, fc3) (names are stored in the file and count). "
    "**checkpoint + SGD momentum** = `torch.save({'state_dict', 'optimizer'})` after one SGD "
    "step, when the momentum buffers exist (the weights alone are half of it), in the current "
    "format and in the legacy one. Against the paper's Table 17 (ResNet-32 3.6, ResNet-110 13.4, WRN-16-2 "
    "5.4, WRN-40-2 17.2 MiB) with 10-class heads, the current-format checkpoint matches two of "
    "four at the paper's rounding: ResNet-32 3.63 and WRN-40-2 17.24 MiB match, ResNet-110 "
    "13.50 MiB is 0.10 MiB over and WRN-16-2 5.32 MiB 0.08 MiB under. The legacy-format "
    "checkpoint matches three (3.59, 13.36, 17.19 MiB; WRN-16-2 5.30 MiB is 0.10 under), and so "
    "do float64 weights of the 100-class heads (3.59, 5.37, 17.21 MiB; ResNet-110 13.23 MiB is "
    "0.17 under). No one definition gives all four: the paper does not say what it saved. "
    "**ONNX** = file from `torch.onnx.export` (TorchScript exporter, opset 17, eval mode). "
    "**fp16 / int8** = parameters × 2 / × 1 bytes, computed from the count, not from converted "
    "files (int8 scales not included). Rows with 100 classes are the CIFAR-100 heads of the "
    "paper's models. KiB = 1024 B, MiB = 1024² B."
)


def memory(device: str) -> str:
    common = (
        "*Measured:* the peak of live tensor bytes during one training step (forward, backward, "
        "SGD update), tracked by a `TorchDispatchMode` that sees every tensor an operator "
        "returns and frees it when its storage dies; it starts from what exists before the step "
        "(parameters, buffers, momentum, the batch). *Analytic:* parameters + buffers + gradients "
        "+ optimiser state (momentum) + the batch + the activations autograd saves (counted with "
        "`saved_tensors_hooks`, each storage once) + the two activation gradients of the layer "
        "being differentiated, walked backward layer by layer (the peak of the walk); KD phase 2 "
        "adds the frozen teacher's no-grad forward working set, layer by layer, to the "
        "activations the student has saved by then (the KD loss runs the teacher after the "
        "student's forward, as training does). Single-phase steps agree with the measurement to "
        "within 1%, the two small CNNs to within 10%; KD phase 2 with a teacher much larger than "
        "its student can be ~20% above the analytic figure, because the teacher's forward keeps "
        "intermediate results "
        "in Python locals of its blocks that the layer-level model does not see. KD as in the "
        "paper is two trainings: phase 1 trains the teacher, phase 2 distils the student with the "
        "teacher frozen; the paper's Table 15 adds the two (1974 + 1222 = 3196 MiB for ResNet); "
        "the machine needed is the larger one (*max*). "
    )
    if device == "cuda":
        return common + (
            "On CUDA, `max_memory_allocated` is the caching allocator's peak of allocated "
            "tensor memory in this process; *device memory in use* (`torch.cuda.mem_get_info`) "
            "is the whole device, including the CUDA context (several hundred MiB, more with "
            "cuDNN/cuBLAS workspaces) and other processes. The paper's figures (GTX 1080, "
            "nvidia-smi style) include the context."
        )
    return common + (
        "*On CPU* these are tensor bytes only. The paper's Table 15 (GTX 1080) is the GPU memory "
        "of the training process, dominated by the CUDA context and allocator caching: about "
        "900 MiB for its lightweight nets whose tensors need a few MiB (918 MiB there vs. ~5 MiB "
        "here). The paper's figures therefore cannot match a CPU measurement; compare the "
        "differences between methods, or run with `--device cuda`."
    )


def time(repeats: int) -> str:
    return (
        f"*Measured:* median wall time of {repeats} training steps per method (forward, backward "
        "and SGD update, zero_grad included), the methods called round-robin in one run so that "
        "machine load hits all alike, after one untimed warm-up round; a step shorter than 50 ms "
        "is repeated within a round and averaged. "
        "KD both phases = one teacher-training step + one distillation step: the cost per batch "
        "of an epoch of each phase. POSD = CE + V_IN (kNN in the batch, k = 2, d = 2). "
        "CPU times depend on the load of the machine; the ratios are the figures to compare."
    )
