import CKernels

/// A safetensors element type.
public enum DType: String, CaseIterable, Sendable, Codable {
    case bool = "BOOL", u8 = "U8", i8 = "I8", i16 = "I16", u16 = "U16", f16 = "F16", bf16 = "BF16"
    case i32 = "I32", u32 = "U32", f32 = "F32", f64 = "F64", i64 = "I64", u64 = "U64"
    case f8e4m3 = "F8_E4M3", f8e5m2 = "F8_E5M2"

    /// Bytes per element.
    public var size: Int {
        switch self {
        case .bool, .u8, .i8, .f8e4m3, .f8e5m2: return 1
        case .i16, .u16, .f16, .bf16: return 2
        case .i32, .u32, .f32: return 4
        case .f64, .i64, .u64: return 8
        }
    }

    /// The kernel element kind for the float types the converter handles.
    package var kernelKind: ns_elem? {
        switch self {
        case .bf16: return NS_BF16
        case .f16: return NS_F16
        case .f32: return NS_F32
        default: return nil
        }
    }

    /// Whether this is an 8-bit float: ModelOpt FP8 weights (with a `weight_scale`) are
    /// dequantized on request; experts in any other 8-bit float layout are refused.
    public var isFloat8: Bool { self == .f8e4m3 || self == .f8e5m2 }

    /// Parses a command-line spelling: bf16, f16, f32 (any case).
    package init?(cliName: String) {
        switch cliName.lowercased() {
        case "bf16", "bfloat16": self = .bf16
        case "f16", "fp16", "float16": self = .f16
        case "f32", "fp32", "float32": self = .f32
        default: return nil
        }
    }
}
