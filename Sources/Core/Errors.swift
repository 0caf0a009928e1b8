import Glibc

/// A failed system call on a path: which call, which file, and the errno text.
public struct IOError: Error, CustomStringConvertible, Codable, Sendable {
    public let operation: String
    public let path: String
    public let code: Int32

    package init(_ operation: String, path: String, code: Int32 = errno) {
        self.operation = operation
        self.path = path
        self.code = code
    }

    public var description: String { "\(path): \(operation) failed: \(String(cString: strerror(code)))" }

    /// A file shorter than its header says.
    package static func shortFile(_ path: String, size: Int) -> IOError {
        IOError("read (the file is \(size) bytes, shorter than its header says)", path: path, code: EIO)
    }
}

/// A safetensors file that breaks the format's rules: which file, which tensor, which rule.
public struct SafetensorsError: Error, CustomStringConvertible, Equatable, Codable, Sendable {
    /// The rule broken (tests match the case; `description` is the message).
    public enum Reason: Sendable, Equatable, CustomStringConvertible, Codable {
        case fileTooSmall(size: Int)
        case headerTooLong(length: UInt64, limit: Int)
        case headerPastEnd(length: UInt64, fileSize: Int)
        case headerNotBrace
        case headerNotJSON(String)
        case headerNotObject
        case metadataNotObject
        case metadataValueNotString(key: String)
        case entryNotObject
        case missingField(String)
        case fieldWrongType(String, expected: String)
        case unknownDType(String)
        case negativeShape
        case badOffsets
        case offsetsReversed(begin: Int64, end: Int64)
        case shapeOverflows([Int])
        case byteCountMismatch(bytes: Int64, shape: [Int], dtype: String, needed: Int)
        case overlap
        case hole(at: Int)
        case bufferLengthMismatch(end: Int, bufferSize: Int)
        case notInFile
        case bufferSize(given: Int, needed: Int)
        case rowsOutOfRange(Range<Int>, shape: [Int])

        public var description: String {
            switch self {
            case let .fileTooSmall(size): return "file is \(size) bytes, too small for a header"
            case let .headerTooLong(length, limit): return "header length \(length) exceeds the limit of \(limit)"
            case let .headerPastEnd(length, size): return "header length \(length) runs past the end of the \(size)-byte file"
            case .headerNotBrace: return "header does not start with '{'"
            case let .headerNotJSON(e): return "header is not valid JSON: \(e)"
            case .headerNotObject: return "header is not a JSON object"
            case .metadataNotObject: return "__metadata__ is not an object"
            case let .metadataValueNotString(k): return "__metadata__ value of \"\(k)\" is not a string"
            case .entryNotObject: return "entry is not an object"
            case let .missingField(f): return "missing \"\(f)\""
            case let .fieldWrongType(f, expected): return "\"\(f)\" is not \(expected)"
            case let .unknownDType(d): return "unknown dtype \"\(d)\""
            case .negativeShape: return "\"shape\" must hold non-negative integers"
            case .badOffsets: return "\"data_offsets\" must be two non-negative integers"
            case let .offsetsReversed(b, e): return "data_offsets end \(e) is before begin \(b)"
            case let .shapeOverflows(shape): return "shape \(shape) overflows"
            case let .byteCountMismatch(bytes, shape, dtype, needed): return "holds \(bytes) bytes but shape \(shape) of \(dtype) needs \(needed)"
            case .overlap: return "data_offsets overlap the previous tensor"
            case let .hole(at): return "data_offsets leave a hole before this tensor (at \(at))"
            case let .bufferLengthMismatch(end, size): return "tensor data ends at byte \(end) of the buffer but the buffer holds \(size) bytes"
            case .notInFile: return "not in this file"
            case let .bufferSize(given, needed): return "buffer of \(given) bytes for \(needed) bytes"
            case let .rowsOutOfRange(rows, shape): return "rows \(rows) outside dim 0 of shape \(shape)"
            }
        }
    }

    public let path: String
    public let key: String?
    public let reason: Reason

    package init(path: String, key: String? = nil, _ reason: Reason) {
        self.path = path
        self.key = key
        self.reason = reason
    }

    public var description: String {
        if let key { return "\(path): tensor \"\(key)\": \(reason)" }
        return "\(path): \(reason)"
    }
}

/// A checkpoint whose files, config or keys do not fit together.
public struct CheckpointError: Error, CustomStringConvertible, Codable, Sendable {
    public let path: String
    public let reason: String

    package init(path: String, _ reason: String) {
        self.path = path
        self.reason = reason
    }

    public var description: String { "\(path): \(reason)" }
}

/// A job asked for the wrong way (exit code 2 from the command-line tool). The message names
/// what is wrong in the library's terms; `remedy` says which option of the job would change it,
/// so the command-line tool can name its own flag.
public struct UsageError: Error, CustomStringConvertible, Codable, Sendable {
    /// An option of a job that would make the request valid.
    package enum Remedy: String, Codable, Sendable {
        /// `force`: replace an existing output.
        case force
        /// `gather`: write a Hugging Face export from the first rank's node only.
        case gather
        /// `dequantize`: load quantized weights (ModelOpt FP8 / NVFP4) as floats.
        case dequantize
    }

    public let message: String
    package let remedy: Remedy?

    package init(_ message: String, remedy: Remedy? = nil) {
        self.message = message
        self.remedy = remedy
    }

    public var description: String { message }
}

/// An output directory that cannot be written now (another job holds it, it changed under us).
public struct OutputError: Error, CustomStringConvertible, Codable, Sendable {
    public let path: String
    public let reason: String

    package init(path: String, _ reason: String) {
        self.path = path
        self.reason = reason
    }

    public var description: String { "output \(path) \(reason)" }
}

/// A broken invariant of nemoshard itself (a plan that does not cover its outputs, a piece out of
/// range): never the input's fault, always a bug to report.
public struct InternalError: Error, CustomStringConvertible, Codable, Sendable {
    public let message: String
    package init(_ message: String) { self.message = message }
    public var description: String { "internal error (please report): \(message)" }
}

/// An input file that changed while a job read it (replaced, truncated, rewritten): the output
/// would mix two versions, so nothing is committed.
public struct InputChangedError: Error, CustomStringConvertible, Codable, Sendable {
    public let path: String
    /// What differs from what the job planned from.
    public let detail: String

    package init(path: String, _ detail: String) {
        self.path = path
        self.detail = detail
    }

    public var description: String { "\(path): changed while the job ran (\(detail)); nothing was committed" }
}
