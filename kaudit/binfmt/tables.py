"""Format constants as data: fatbin kinds and flags, EIATTR codes, AMDGPU machine numbers.

Values are those verified in gpu-binary-formats.md (§2.3, §3.6-3.7, §4.3); unknown values are reported,
never rejected, because every toolkit release adds some.
"""

from __future__ import annotations

# Fatbin entry kinds (gpu-binary-formats.md §2.2).
FATBIN_KIND_PTX = 1
FATBIN_KIND_ELF = 2
FATBIN_KIND_LTO_IR = 8

# Fatbin entry flags (§2.3).
FLAG_DEBUG = 0x2
FLAG_LZ4 = 0x2000
FLAG_ZSTD = 0x8000
FLAG_ARCH_SPECIFIC = 0x100000
FLAG_FAMILY_SPECIFIC = 0x200000

# EIATTR record formats and the attribute codes kaudit reads (§3.7).
EIFMT_NVAL, EIFMT_HVAL, EIFMT_SVAL = 1, 3, 4  # 2 is BVAL: like NVAL and HVAL, two bytes after the header
EIATTR_MAX_THREADS = 0x05
EIATTR_FRAME_SIZE = 0x11
EIATTR_REGCOUNT = 0x2F
EIATTR_CUDA_API_VERSION = 0x37
EICOMPAT_ATTR_CUDA_ACCELERATOR_TARGET = 0x09

# NVIDIA note types (§3.5).
NT_NV_CUINFO = 1000
NT_NV_TKINFO = 2000
NVIDIA_NOTE_OWNER = "NVIDIA Corp"

STO_CUDA_ENTRY = 0x10
SHT_CUDA_INFO = 0x70000000
SHT_CUDA_COMPAT = 0x70000086

# Cubin ELF ABI versions (§3.1): 7 is the old ABI, 8 the new one.
CUDA_ABI_V2 = 8

# AMDGPU (§4).
AMDGPU_NOTE_OWNER = "AMDGPU"
NT_AMDGPU_METADATA = 32
EF_AMDGPU_MACH = 0xFF
EF_AMDGPU_FEATURE_XNACK_V4 = 0x300
EF_AMDGPU_FEATURE_SRAMECC_V4 = 0xC00

AMDGPU_MACH: dict[int, str] = {
    0x20: "gfx600", 0x21: "gfx601", 0x22: "gfx700", 0x23: "gfx701", 0x24: "gfx702", 0x25: "gfx703",
    0x26: "gfx704", 0x28: "gfx801", 0x29: "gfx802", 0x2A: "gfx803", 0x2B: "gfx810", 0x2C: "gfx900",
    0x2D: "gfx902", 0x2E: "gfx904", 0x2F: "gfx906", 0x30: "gfx908", 0x31: "gfx909", 0x32: "gfx90c",
    0x33: "gfx1010", 0x34: "gfx1011", 0x35: "gfx1012", 0x36: "gfx1030", 0x37: "gfx1031", 0x38: "gfx1032",
    0x39: "gfx1033", 0x3A: "gfx602", 0x3B: "gfx705", 0x3C: "gfx805", 0x3D: "gfx1035", 0x3E: "gfx1034",
    0x3F: "gfx90a", 0x40: "gfx940", 0x41: "gfx1100", 0x42: "gfx1013", 0x43: "gfx1150", 0x44: "gfx1103",
    0x45: "gfx1036", 0x46: "gfx1101", 0x47: "gfx1102", 0x48: "gfx1200", 0x49: "gfx1250", 0x4A: "gfx1151",
    0x4B: "gfx941", 0x4C: "gfx942", 0x4E: "gfx1201", 0x4F: "gfx950", 0x51: "gfx9-generic",
    0x52: "gfx10-1-generic", 0x53: "gfx10-3-generic", 0x54: "gfx11-generic", 0x55: "gfx1152",
    0x58: "gfx1153", 0x59: "gfx12-generic", 0x5A: "gfx1251", 0x5F: "gfx9-4-generic",
}  # fmt: skip

# Host-side shared libraries whose presence in DT_NEEDED marks a GPU runtime user.
GPU_RUNTIME_PREFIXES = (
    "libcudart.so",
    "libcuda.so",
    "libnvrtc.so",
    "libamdhip64.so",
    "libhiprtc.so",
    "libhsa-runtime64.so",
    "libOpenCL.so",
    "libze_loader.so",
    "libsycl.so",
)


def cuda_toolkit_version(api_version: int) -> str:
    """``130`` (``EIATTR_CUDA_API_VERSION`` / ``.note.nv.cuinfo``) → ``"13.0"``."""
    return f"{api_version // 10}.{api_version % 10}"


def amdgpu_code_object_version(abi_version: int) -> int:
    """EI_ABIVERSION of an HSA code object → its code object version (0 → v2 … 4 → v6)."""
    return abi_version + 2
