/// Every error a nemoshard job reports, as one value: what `agree` sends from the failing rank to
/// every other rank unchanged (it is `Codable`), and what a library caller switches on to tell
/// missing experts (`.checkpoint`) from a full disk (`.io`, code `ENOSPC`).
public enum NemoShardError: Error, Codable, Sendable, CustomStringConvertible {
    case usage(UsageError)
    case checkpoint(CheckpointError)
    case safetensors(SafetensorsError)
    case io(IOError)
    case inputChanged(InputChangedError)
    case allocation(AllocationError)
    case output(OutputError)
    case `internal`(InternalError)
    /// An error of another type (MPI's, a caller's own), by its type name and description.
    case other(type: String, message: String)
    /// A rank stopped only because another rank failed; `agree` prefers any other error.
    case peer(String)

    /// `error` as one of the cases (an error that knows its case says so itself).
    public init(_ error: Error) {
        switch error {
        case let e as NemoShardError: self = e
        case let e as NemoShardErrorConvertible: self = e.nemoShardError
        case let e as UsageError: self = .usage(e)
        case let e as CheckpointError: self = .checkpoint(e)
        case let e as SafetensorsError: self = .safetensors(e)
        case let e as IOError: self = .io(e)
        case let e as InputChangedError: self = .inputChanged(e)
        case let e as AllocationError: self = .allocation(e)
        case let e as OutputError: self = .output(e)
        case let e as InternalError: self = .internal(e)
        default: self = .other(type: String(describing: type(of: error)), message: String(describing: error))
        }
    }

    /// The job was asked for the wrong way (rather than failing on its input or the system).
    package var isUsage: Bool {
        if case .usage = self { return true }
        return false
    }

    /// Only a consequence of another rank's failure.
    package var isPeer: Bool {
        if case .peer = self { return true }
        return false
    }

    public var description: String {
        switch self {
        case let .usage(e): return e.description
        case let .checkpoint(e): return e.description
        case let .safetensors(e): return e.description
        case let .io(e): return e.description
        case let .inputChanged(e): return e.description
        case let .allocation(e): return e.description
        case let .output(e): return e.description
        case let .internal(e): return e.description
        case let .other(_, message): return message
        case let .peer(message): return message
        }
    }
}

/// An error type of a layer above Core that knows which `NemoShardError` it is.
package protocol NemoShardErrorConvertible: Error {
    var nemoShardError: NemoShardError { get }
}
