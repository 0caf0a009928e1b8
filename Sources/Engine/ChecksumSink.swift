import CKernels
import Synchronization
import NemoShardCore
import NemoShardFormat
import NemoShardModel

/// Computes a CRC-32C per slice of each output (a grouped tensor's slice = one expert; any other
/// tensor is one slice) without holding whole tensors: bytes that arrive in order are hashed at
/// once, early ones wait until the gap before them is filled. Writes from several workers are
/// serialised by a lock (hashing is in order by nature).
package final class ChecksumSink: TensorSink, @unchecked Sendable {
    private let lock = Mutex(())
    package let sliceBytes: [Int]
    private var crc: [[UInt32]]
    private var next: [[Int]]
    private var pending: [[[Int: [UInt8]]]]

    /// `slices[i]` = number of slices output i is cut into (1 for whole tensors).
    package init(outputs: [TensorSpec], slices: [Int]) {
        sliceBytes = zip(outputs, slices).map { $1 > 0 ? $0.byteCount / $1 : 0 }
        crc = slices.map { [UInt32](repeating: 0, count: $0) }
        next = slices.map { [Int](repeating: 0, count: $0) }
        pending = slices.map { Array(repeating: [:], count: $0) }
    }

    package func directPointer(output: Int, offset: Int, count: Int) -> UnsafeMutableRawPointer? { nil }

    package func write(output: Int, offset: Int, _ bytes: UnsafeRawBufferPointer) throws {
        try lock.withLock { _ in try take(output: output, offset: offset, bytes) }
    }

    /// `bytes` may be a mapped input file: every read of it is guarded (`MappedSource`).
    private func take(output: Int, offset: Int, _ bytes: UnsafeRawBufferPointer) throws {
        let size = sliceBytes[output]
        var done = 0
        while done < bytes.count {
            let at = offset + done
            let s = size == 0 ? 0 : at / size
            let inSlice = at - s * size
            let n = min(bytes.count - done, size - inSlice)
            let part = UnsafeRawBufferPointer(rebasing: bytes[done..<(done + n)])
            if inSlice == next[output][s] {
                try feed(output, s, part)
                while let more = pending[output][s].removeValue(forKey: next[output][s]) {
                    try more.withUnsafeBytes { try feed(output, s, $0) }
                }
            } else {
                var copy = [UInt8](repeating: 0, count: n)
                if let base = part.baseAddress { try copy.withUnsafeMutableBytes { try MappedSource.copy($0.baseAddress!, from: base, count: n) } }
                pending[output][s][inSlice] = copy
            }
            done += n
        }
    }

    private func feed(_ o: Int, _ s: Int, _ part: UnsafeRawBufferPointer) throws {
        crc[o][s] = try MappedSource.crc32c(crc[o][s], part)
        next[o][s] += part.count
    }

    /// CRC of every slice of output `i` (complete once the plan has run).
    package func checksums(_ i: Int) -> [UInt32] { crc[i] }
}
