import CKernels
import Glibc
import NemoShardCore
import NemoShardFormat
import NemoShardModel

/// Reading from a mapped input file that may shrink under the job: every read of mapped source
/// bytes goes through these, which turn the SIGBUS of a truncated file into `MappedSourceFault`;
/// the executor then names the file that changed.
package enum MappedSource {
    /// The source memory vanished (a mapped file was truncated while it was read).
    package struct Fault: Error {}

    /// memcpy that survives a vanished source.
    package static func copy(_ dst: UnsafeMutableRawPointer, from src: UnsafeRawPointer, count: Int) throws {
        guard count > 0 else { return }
        guard ns_guarded_copy(dst, src, count) == 0 else { throw Fault() }
    }

    /// CRC-32C continued from `crc`, surviving a vanished source.
    package static func crc32c(_ crc: UInt32, _ data: UnsafeRawBufferPointer) throws -> UInt32 {
        var value = crc
        guard data.count > 0, let base = data.baseAddress else { return crc }
        guard ns_guarded_crc32c(&value, base, data.count) == 0 else { throw Fault() }
        return value
    }

    /// Turns an error met while reading `file` into the reason behind it when the file changed
    /// (shrunk, replaced, rewritten): a SIGBUS caught on a mapped page, `EFAULT` from a write out
    /// of a mapping, or a short read are all the file's doing, not the output's.
    package static func explain(_ error: Error, reading file: SystemFile, expected: FileFingerprint?) -> Error {
        let suspicious: Bool
        switch error {
        case is Fault: suspicious = true
        case let e as IOError: suspicious = e.code == EFAULT || e.code == EIO
        default: suspicious = false
        }
        guard suspicious else { return error }
        if let expected {
            do { try file.check(against: expected) } catch let changed { return changed }
        }
        if error is Fault {
            return InputChangedError(path: file.path, "it shrank while the job read it")
        }
        return error
    }
}
