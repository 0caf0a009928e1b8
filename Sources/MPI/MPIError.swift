import CMPI
import NemoShardCore

/// A failed MPI call: which call, its error code and MPI's own text for it.
package struct MPIError: Error, CustomStringConvertible {
    package let call: String
    package let code: Int32

    package var description: String {
        var buffer = [CChar](repeating: 0, count: Int(cmpi_max_error_string()) + 1)
        var length: Int32 = 0
        MPI_Error_string(code, &buffer, &length)
        let text = String(decoding: buffer.prefix(Int(length)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return "\(call) failed: \(text) (code \(code))"
    }

    /// Throws unless `code` is MPI_SUCCESS.
    package static func check(_ code: Int32, _ call: @autoclosure () -> String) throws {
        if code != cmpi_success() { throw MPIError(call: call(), code: code) }
    }
}
