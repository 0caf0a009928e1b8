import Glibc

/// A failed system call on a path: which call, which file, and the errno text.
public struct IOError: Error, CustomStringConvertible {
    public let operation: String
    public let path: String
    public let code: Int32

    public init(_ operation: String, path: String, code: Int32 = errno) {
        self.operation = operation
        self.path = path
        self.code = code
    }

    public var description: String { "\(path): \(operation) failed: \(String(cString: strerror(code)))" }
}

/// A safetensors file that breaks the format's rules.
public struct SafetensorsError: Error, CustomStringConvertible, Equatable {
    public let path: String
    public let key: String?
    public let reason: String

    public init(path: String, key: String? = nil, _ reason: String) {
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
public struct CheckpointError: Error, CustomStringConvertible {
    public let path: String
    public let reason: String

    public init(path: String, _ reason: String) {
        self.path = path
        self.reason = reason
    }

    public var description: String { "\(path): \(reason)" }
}

/// A command used the wrong way (exit code 2).
public struct UsageError: Error, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// An output directory that cannot be written now (another job holds it, it changed under us).
public struct OutputError: Error, CustomStringConvertible {
    public let path: String
    public let reason: String

    public init(path: String, _ reason: String) {
        self.path = path
        self.reason = reason
    }

    public var description: String { "output \(path) \(reason)" }
}

/// A broken invariant of nemoshard itself (a plan that does not cover its outputs, a piece out of
/// range): never the input's fault, always a bug to report.
public struct InternalError: Error, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { "internal error (please report): \(message)" }
}
